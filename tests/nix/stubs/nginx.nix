# services.nginx as far as modules/nginx.nix meets it: the options it sets (names, types, defaults
# of nixos/modules/services/web-servers/nginx/{default,vhost-options,location-options}.nix), what the
# real module sets at normal priority (reloadServices of a useACMEHost certificate, the unit, the
# user), its assertions (root/alias, SSL modes, the certificate-ownership check), and nginx.conf as
# it writes it — the text that `services.nginx.validateConfigFile` (default true) hands to gixy at
# build time (pkgs.writers.writeNginxConfig runs a plain `gixy nginx.conf`). Checked on 2026-12-01
# against those files of a fork at commit 4aa6836a648c. The mime/fastcgi includes are left out (their
# files are store paths that do not exist here).
{ config, lib, ... }:

let
  inherit (lib) mkOption types;
  cfg = config.services.nginx;
  option = type: default: mkOption { inherit type default; };
  required = type: mkOption { inherit type; };

  location = types.submodule {
    options = {
      proxyPass = option (types.nullOr types.str) null;
      index = option (types.nullOr types.str) null;
      tryFiles = option (types.nullOr types.str) null;
      root = option (types.nullOr types.path) null;
      alias = option (types.nullOr types.path) null;
      return = option (types.nullOr (types.oneOf [ types.str types.int ])) null;
      priority = option types.int 1000;
      extraConfig = option types.lines "";
    };
  };
  listen = types.submodule {
    options = {
      addr = required types.str;
      port = option (types.nullOr types.port) null;
      ssl = option types.bool false;
      proxyProtocol = option types.bool false;
      extraParameters = option (types.listOf types.str) [ ];
    };
  };
  virtualHost = types.submodule {
    options = {
      serverName = option (types.nullOr types.str) null;
      serverAliases = option (types.listOf types.str) [ ];
      listen = option (types.listOf listen) [ ];
      default = option types.bool false;
      root = option (types.nullOr types.path) null;
      onlySSL = option types.bool false;
      addSSL = option types.bool false;
      forceSSL = option types.bool false;
      rejectSSL = option types.bool false;
      http2 = option types.bool true;
      enableACME = option types.bool false;
      useACMEHost = option (types.nullOr types.str) null;
      acmeRoot = option (types.nullOr types.str) "/var/lib/acme/acme-challenge";
      sslCertificate = required types.path;
      sslCertificateKey = required types.path;
      sslTrustedCertificate = option (types.nullOr types.path) null;
      locations = option (types.attrsOf location) { };
      extraConfig = option types.lines "";
    };
  };

  # virtualHosts as the real module reads them: serverName filled in, ACME certificate paths set.
  vhosts = lib.mapAttrs (
    name: vhost:
    let
      certName = if vhost.useACMEHost != null then vhost.useACMEHost else serverName;
      serverName = if vhost.serverName != null then vhost.serverName else name;
      directory = config.security.acme.certs.${certName}.directory;
    in
    vhost
    // {
      inherit serverName certName;
    }
    // lib.optionalAttrs (vhost.enableACME || vhost.useACMEHost != null) {
      sslCertificate = "${directory}/fullchain.pem";
      sslCertificateKey = "${directory}/key.pem";
      sslTrustedCertificate =
        if vhost.sslTrustedCertificate != null then vhost.sslTrustedCertificate else "${directory}/chain.pem";
    }
  ) cfg.virtualHosts;
  acmeHosts = lib.filter (vhost: vhost.enableACME || vhost.useACMEHost != null) (lib.attrValues vhosts);
  certNames = lib.unique (map (vhost: vhost.certName) acmeHosts);

  hasSSL = vhost: vhost.onlySSL || vhost.addSSL || vhost.forceSSL;
  listenLine =
    vhost: l:
    "listen ${l.addr}${lib.optionalString (l.port != null) ":${toString l.port}"} "
    + lib.optionalString l.ssl "ssl "
    + lib.optionalString vhost.default "default_server "
    + lib.optionalString l.proxyProtocol "proxy_protocol "
    + lib.concatStringsSep " " l.extraParameters
    + ";";
  locationText =
    name: l:
    ''
      location ${name} {
      ${lib.concatStringsSep "\n" (
        lib.optional (l.proxyPass != null) "proxy_pass ${l.proxyPass};"
        ++ lib.optional (l.index != null) "index ${l.index};"
        ++ lib.optional (l.tryFiles != null) "try_files ${l.tryFiles};"
        ++ lib.optional (l.root != null) "root ${l.root};"
        ++ lib.optional (l.alias != null) "alias ${l.alias};"
        ++ lib.optional (l.return != null) "return ${toString l.return};"
      )}
      ${l.extraConfig}
      }
    '';
  sortedLocations =
    locations:
    lib.sortOn (entry: entry.priority) (lib.mapAttrsToList (name: l: l // { inherit name; }) locations);
  serverText =
    vhost:
    ''
      server {
      ${lib.concatMapStringsSep "\n" (listenLine vhost) vhost.listen}
      server_name ${vhost.serverName} ${lib.concatStringsSep " " vhost.serverAliases};
      ${lib.optionalString (hasSSL vhost && vhost.http2) "http2 on;"}
      ${lib.optionalString (hasSSL vhost) ''
        ssl_certificate ${vhost.sslCertificate};
        ssl_certificate_key ${vhost.sslCertificateKey};
      ''}
      ${lib.optionalString (
        hasSSL vhost && vhost.sslTrustedCertificate != null
      ) "ssl_trusted_certificate ${vhost.sslTrustedCertificate};"}
      ${lib.optionalString (vhost.root != null) "root ${vhost.root};"}
      ${lib.optionalString (vhost.enableACME || vhost.useACMEHost != null) ''
        location ^~ /.well-known/acme-challenge/ {
        ${lib.optionalString (vhost.acmeRoot != null) "root ${vhost.acmeRoot};"}
        auth_basic off;
        auth_request off;
        }
      ''}
      ${lib.concatMapStrings (l: locationText l.name l) (sortedLocations vhost.locations)}
      ${vhost.extraConfig}
      }
    '';

  configText = ''
    pid /run/nginx/nginx.pid;
    error_log ${cfg.logError};
    daemon off;
    events {
    }
    http {
    types_hash_max_size 2688;
    default_type application/octet-stream;
    ssl_protocols ${cfg.sslProtocols};
    ${lib.optionalString (cfg.sslCiphers != null) "ssl_ciphers ${
      if lib.isList cfg.sslCiphers then lib.concatStringsSep ":" cfg.sslCiphers else cfg.sslCiphers
    };"}
    map $http_upgrade $connection_upgrade {
    default upgrade;
    ''' close;
    }
    client_max_body_size ${cfg.clientMaxBodySize};
    server_tokens off;
    ${lib.concatMapStrings serverText (lib.attrValues vhosts)}
    ${cfg.appendHttpConfig}
    }
    ${lib.optionalString (cfg.streamConfig != "") ''
      stream {
      ${cfg.streamConfig}
      }
    ''}
  '';

  # nixos/modules/security/acme/mk-cert-ownership-assertion.nix
  readsCertificate =
    cert: service:
    (service.serviceConfig.User or "root") == "root"
    || lib.elem (service.serviceConfig.User or "root") (config.users.groups.${cert.group}.members or [ ])
    || lib.elem cert.group (
      lib.optional (service.serviceConfig ? Group) service.serviceConfig.Group
      ++ lib.toList (service.serviceConfig.SupplementaryGroups or [ ])
    );
in
{
  options.services.nginx = {
    enable = option types.bool false;
    user = option types.str "nginx";
    group = option types.str "nginx";
    logError = option types.str "stderr";
    streamConfig = option types.lines "";
    sslProtocols = option types.str "TLSv1.2 TLSv1.3";
    sslCiphers = option (types.nullOr (types.either types.str (types.listOf types.str))) [
      "ECDHE-ECDSA-AES128-GCM-SHA256"
      "ECDHE-RSA-AES128-GCM-SHA256"
      "ECDHE-ECDSA-AES256-GCM-SHA384"
      "ECDHE-RSA-AES256-GCM-SHA384"
      "ECDHE-ECDSA-CHACHA20-POLY1305"
      "ECDHE-RSA-CHACHA20-POLY1305"
    ];
    clientMaxBodySize = option types.str "10m";
    validateConfigFile = option types.bool true;
    appendHttpConfig = option types.lines "";
    virtualHosts = option (types.attrsOf virtualHost) { localhost = { }; };
    # read-only here: the text the real module writes (and checks with gixy)
    configText = mkOption {
      type = types.str;
      readOnly = true;
      default = configText;
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.all (
          vhost: lib.all (l: l.root == null || l.alias == null) (lib.attrValues vhost.locations)
        ) (lib.attrValues vhosts);
        message = "Only one of nginx root or alias can be specified on a location.";
      }
      {
        assertion = lib.all (
          vhost:
          lib.count lib.id [
            vhost.addSSL
            vhost.onlySSL
            vhost.forceSSL
            vhost.rejectSSL
          ] <= 1
        ) (lib.attrValues vhosts);
        message = "Options services.nginx.virtualHosts.<name>.addSSL, onlySSL, forceSSL and rejectSSL are mutually exclusive.";
      }
      {
        assertion = lib.all (vhost: !(vhost.enableACME && vhost.useACMEHost != null)) (lib.attrValues vhosts);
        message = "Options services.nginx.virtualHosts.<name>.enableACME and useACMEHost are mutually exclusive.";
      }
    ]
    ++ map (
      name:
      let
        cert = config.security.acme.certs.${name};
      in
      {
        assertion = readsCertificate cert config.systemd.services.nginx;
        message = "Certificate ${name} (group=${cert.group}) must be readable by service(s) nginx";
      }
    ) certNames;

    security.acme.certs = lib.listToAttrs (
      map (vhost: lib.nameValuePair vhost.useACMEHost { reloadServices = [ "nginx.service" ]; }) (
        lib.filter (vhost: vhost.useACMEHost != null) acmeHosts
      )
    );

    systemd.services.nginx = {
      description = "Nginx Web Server";
      after = [ "network.target" ] ++ map (name: "acme-${name}.service") certNames;
      wants = map (name: "acme-${name}.service") certNames;
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        User = cfg.user;
        Group = cfg.group;
        ProtectSystem = "strict";
        ProtectHome = lib.mkDefault true;
        RuntimeDirectory = "nginx";
        UMask = "0027";
      };
    };

    users.users = lib.optionalAttrs (cfg.user == "nginx") {
      nginx = {
        group = cfg.group;
        isSystemUser = true;
      };
    };
    users.groups = lib.optionalAttrs (cfg.group == "nginx") { nginx = { }; };
  };
}
