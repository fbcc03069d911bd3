# TLS certificate for the domain: ACME, generated once (self-signed) or given files.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.chatmail;
  inherit (cfg.rendered.paths) tlsCert tlsKey;

  # nixpkgs has called Dovecot's unit dovecot2 and, later, dovecot.
  dovecotUnits = map (name: "${name}.service") (
    lib.filter (name: config.systemd.services ? ${name}) [
      "dovecot2"
      "dovecot"
    ]
  );
  nginxOn = cfg.nginx.enable;
  # Owns the certificate and key (acme, selfSigned): nginx runs as its own user, not root.
  tlsGroup = "chatmail-tls";
  tlsUsers = [ "postfix.service" ] ++ dovecotUnits ++ lib.optional nginxOn "nginx.service";
  # the names nginx answers for (autoconfig, MTA-STS, www) besides the domain itself
  extraNames = map (label: "${label}.${cfg.domain}") [
    "autoconfig"
    "mta-sts"
    "www"
  ];
in
{
  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        users.groups.${tlsGroup}.members =
          [ config.services.postfix.user ] ++ lib.optional nginxOn config.services.nginx.user;
        assertions = [
          {
            assertion =
              cfg.tls.mode == "manual" -> (cfg.tls.certificateFile != null && cfg.tls.keyFile != null);
            message = ''services.chatmail.tls.mode = "manual" needs both services.chatmail.tls.certificateFile and services.chatmail.tls.keyFile (absolute paths of PEM files); set the missing one, or use tls.mode = "acme" or "selfSigned".'';
          }
          {
            assertion =
              cfg.tls.mode != "manual" -> (cfg.tls.certificateFile == null && cfg.tls.keyFile == null);
            message = ''services.chatmail.tls.certificateFile and keyFile are only read with tls.mode = "manual"; set services.chatmail.tls.mode = "manual"; or remove them.'';
          }
          {
            assertion =
              cfg.tls.mode == "acme" && nginxOn
              -> (config.security.acme.certs.${cfg.domain}.listenHTTP or null) == null;
            message = ''security.acme.certs."${toString cfg.domain}".listenHTTP is set, but with services.chatmail.nginx.enable the ACME HTTP-01 challenge is answered by nginx on port 80 (webroot); remove listenHTTP, or set services.chatmail.nginx.enable = false.'';
          }
        ];
      }

      (lib.mkIf (cfg.tls.mode == "acme") {
        security.acme.certs.${cfg.domain} = {
          email = lib.mkIf (cfg.settings.acme_email != "") cfg.settings.acme_email;
          # nginx's own module adds nginx.service for its useACMEHost hosts
          reloadServices = [ "postfix.service" ] ++ dovecotUnits;
          extraDomainNames = lib.mkIf nginxOn extraNames;
          group = tlsGroup;
        }
        // (
          if nginxOn then
            {
              # HTTP-01 through nginx's port 80 server (render-discovery.nix serves this root)
              webroot = cfg.rendered.discovery.paths.acmeChallengeDir;
            }
          else
            {
              # lego's own HTTP-01 server on port 80 (opened with openFirewall).
              listenHTTP = lib.mkDefault ":80";
            }
        );
      })

      (lib.mkIf (cfg.tls.mode == "selfSigned") {
        systemd.services.chatmail-tls-selfsigned = {
          description = "self-signed TLS certificate for ${cfg.domain}";
          wantedBy = [ "multi-user.target" ];
          before = tlsUsers;
          requiredBy = tlsUsers;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            StateDirectory = baseNameOf (dirOf tlsCert);
            StateDirectoryMode = "0750";
            Group = tlsGroup;
            UMask = "0027";
          };
          # Made once; delete the files to get a new pair.
          script = ''
            if [ ! -s ${lib.escapeShellArg tlsCert} ] || [ ! -s ${lib.escapeShellArg tlsKey} ]; then
              ${lib.getExe pkgs.openssl} req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                -nodes -days 3650 -subj ${lib.escapeShellArg "/CN=${cfg.domain}"} \
                -addext ${
                  lib.escapeShellArg (
                    "subjectAltName="
                    + lib.concatMapStringsSep "," (name: "DNS:${name}") ([ cfg.domain ] ++ extraNames)
                  )
                } \
                -addext keyUsage=critical,digitalSignature,keyCertSign -addext extendedKeyUsage=serverAuth \
                -keyout ${lib.escapeShellArg tlsKey} -out ${lib.escapeShellArg tlsCert}
            fi
            # readable by the unit's group (${tlsGroup}), also a pair made before nginx was part
            # of the module: nginx reads them as its own user
            chgrp "$(id -g)" ${lib.escapeShellArg tlsKey} ${lib.escapeShellArg tlsCert}
            chmod 0640 ${lib.escapeShellArg tlsKey} ${lib.escapeShellArg tlsCert}
          '';
        };
      })
    ]
  );
}
