# nginx: the relay's HTTPS site (autoconfig, MTA-STS, /new, index page), the port 80 redirect with
# the ACME challenge, ALPN multiplexing of port 443; and chatmail-newemail behind /new. All of
# it comes from render.nix: services.chatmail.rendered.discovery (render-discovery.nix) and,
# for the service, rendered.systemdUnits (render-systemd.nix).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.chatmail;
  discovery = cfg.rendered.discovery;

  virtualHost =
    server:
    let
      ssl = lib.any (listen: listen.ssl) server.listen;
    in
    {
      serverName = lib.head server.serverNames;
      serverAliases = lib.tail server.serverNames;
      inherit (server) listen root extraConfig;
      default = server.default;
      onlySSL = ssl;
      locations = lib.mapAttrs (_: text: { extraConfig = text; }) server.locations;
    }
    // lib.optionalAttrs ssl (
      if cfg.tls.mode == "acme" then
        {
          # nixpkgs then orders nginx after the certificate and reloads it on renewal
          useACMEHost = cfg.domain;
        }
      else
        {
          sslCertificate = cfg.rendered.paths.tlsCert;
          sslCertificateKey = cfg.rendered.paths.tlsKey;
        }
    );
in
{
  options.services.chatmail.nginx = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether nginx serves what Delta Chat and other mail servers look up over HTTPS:
        the autoconfig file (`https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml` and
        `https://autoconfig.<domain>/mail/config-v1.1.xml`), the MTA-STS policy
        (`https://mta-sts.<domain>/.well-known/mta-sts.txt`), `/new` (fresh account credentials,
        served by `chatmail-newemail`) and an index page with the `dcaccount:` link; port 80
        redirects to HTTPS and answers ACME HTTP-01 challenges.
      '';
    };
    alpnMultiplexing = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether port 443 also carries IMAP and SMTP, chosen by the client's TLS ALPN (`imap` goes
        to port 993, `smtp` to 465, anything else to the HTTPS site), for networks that let only
        port 443 through; autoconfig then lists port 443 too. The HTTPS site itself listens on
        {option}`services.chatmail.nginx.httpsPort` on loopback.
      '';
    };
    httpsPort = lib.mkOption {
      type = lib.types.port;
      default = 8443;
      description = "Loopback port of the HTTPS site behind the ALPN multiplexer.";
    };
    newemailPort = lib.mkOption {
      type = lib.types.port;
      default = 3691;
      description = "Loopback port of `chatmail-newemail`, to which nginx passes `/new`.";
    };
  };

  config = lib.mkIf (cfg.enable && cfg.nginx.enable) {
    assertions = [
      {
        assertion = cfg.nginx.httpsPort != cfg.nginx.newemailPort;
        message = "services.chatmail.nginx.httpsPort and newemailPort are both ${toString cfg.nginx.httpsPort}; give each its own loopback port.";
      }
    ];

    # render.nix's default paths.wwwDir is /etc/chatmail/www
    environment.etc =
      lib.mapAttrs' (name: text: lib.nameValuePair "chatmail/www/${name}" { inherit text; }) discovery.www
      // {
        # the index page's QR code, made at build time
        "chatmail/www/${discovery.qr.file}".source =
          pkgs.runCommand "chatmail-qr.png" { nativeBuildInputs = [ pkgs.qrencode ]; }
            "qrencode -t PNG -s 8 -o $out ${lib.escapeShellArg discovery.qr.content}";
      };

    services.nginx = {
      enable = true;
      streamConfig = discovery.nginx.streamConfig;
      appendHttpConfig = discovery.nginx.httpExtraConfig;
      virtualHosts = lib.listToAttrs (
        map (server: lib.nameValuePair server.name (virtualHost server)) discovery.nginx.servers
      );
    };

    # confinement included: render.nix renders it once for the module and for
    # `systemd-analyze security --offline` (tests/nix)
    systemd.services.chatmail-newemail = {
      inherit (cfg.rendered.systemdUnits.chatmail-newemail) description serviceConfig;
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      restartTriggers = [ cfg.rendered.chatmailIni ];
    };
  };
}
