# nixpkgs' services.nginx and services.opendkim options that modules/nginx.nix and modules/dkim.nix
# set, with nixpkgs' names, types and defaults (nixos/modules/services/web-servers/nginx/
# {default,vhost-options,location-options}.nix, nixos/modules/services/mail/opendkim.nix).
{ lib, ... }:

let
  inherit (lib) mkOption types;
  option = type: default: mkOption { inherit type default; };
  location = types.submodule {
    options = {
      proxyPass = option (types.nullOr types.str) null;
      root = option (types.nullOr types.path) null;
      alias = option (types.nullOr types.path) null;
      extraConfig = option types.lines "";
    };
  };
  listen = types.submodule {
    options = {
      addr = mkOption { type = types.str; };
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
      root = option (types.nullOr types.path) null;
      onlySSL = option types.bool false;
      addSSL = option types.bool false;
      forceSSL = option types.bool false;
      enableACME = option types.bool false;
      useACMEHost = option (types.nullOr types.str) null;
      sslCertificate = option (types.nullOr types.path) null;
      sslCertificateKey = option (types.nullOr types.path) null;
      locations = option (types.attrsOf location) { };
      extraConfig = option types.lines "";
    };
  };
in
{
  options.services.nginx = {
    enable = option types.bool false;
    user = option types.str "nginx";
    group = option types.str "nginx";
    streamConfig = option types.lines "";
    virtualHosts = option (types.attrsOf virtualHost) { localhost = { }; };
  };

  options.services.opendkim = {
    enable = option types.bool false;
    socket = option types.str "local:/run/opendkim/opendkim.sock";
    user = option types.str "opendkim";
    group = option types.str "opendkim";
    domains = option types.str "csl:localhost";
    keyPath = option types.path "/var/lib/opendkim/keys";
    selector = mkOption { type = types.str; };
    configFile = option (types.nullOr types.path) null;
  };
}
