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
  tlsUsers = [ "postfix.service" ] ++ dovecotUnits;
in
{
  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
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
        ];
      }

      (lib.mkIf (cfg.tls.mode == "acme") {
        security.acme.certs.${cfg.domain} = {
          # lego's own HTTP-01 server on port 80 (opened with openFirewall).
          listenHTTP = lib.mkDefault ":80";
          email = lib.mkIf (cfg.settings.acme_email != "") cfg.settings.acme_email;
          reloadServices = tlsUsers;
        };
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
            StateDirectoryMode = "0700";
            UMask = "0077";
          };
          # Made once; delete the files to get a new pair.
          script = ''
            if [ ! -s ${lib.escapeShellArg tlsCert} ] || [ ! -s ${lib.escapeShellArg tlsKey} ]; then
              ${lib.getExe pkgs.openssl} req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                -nodes -days 3650 -subj ${lib.escapeShellArg "/CN=${cfg.domain}"} \
                -addext ${lib.escapeShellArg "subjectAltName=DNS:${cfg.domain}"} \
                -addext keyUsage=critical,digitalSignature,keyCertSign -addext extendedKeyUsage=serverAuth \
                -keyout ${lib.escapeShellArg tlsKey} -out ${lib.escapeShellArg tlsCert}
            fi
          '';
        };
      })
    ]
  );
}
