# security.acme: the options modules/tls.nix and nginx meet (each certificate inherits
# security.acme.defaults), their types and defaults, and the real module's assertions (the terms
# of service accepted; exactly one of dnsProvider, webroot, listenHTTP, s3Bucket per certificate)
# and its per-certificate units. Checked on 2026-12-01 against nixos/modules/security/acme/default.nix
# of a fork at commit 4aa6836a648c.
{ config, lib, ... }:

let
  inherit (lib) mkOption types;
  cfg = config.security.acme;

  # Options of both security.acme.defaults and security.acme.certs.<name>; a certificate's default
  # is the value in `defaults` (unless inheritDefaults = false).
  inheritable =
    isDefaults:
    { config, ... }:
    let
      option =
        name: type: default:
        mkOption {
          inherit type;
          default = if isDefaults || !config.inheritDefaults then default else cfg.defaults.${name};
        };
    in
    {
      options = {
        dnsProvider = option "dnsProvider" (types.nullOr types.str) null;
        email = option "email" (types.nullOr types.str) null;
        group = option "group" types.str "acme";
        listenHTTP = option "listenHTTP" (types.nullOr types.str) null;
        postRun = option "postRun" types.lines "";
        reloadServices = option "reloadServices" (types.listOf types.str) [ ];
        server = option "server" (types.nullOr types.str) "https://acme-v02.api.letsencrypt.org/directory";
        webroot = option "webroot" (types.nullOr types.str) null;
      };
    };
  certificate =
    { name, ... }:
    {
      options = {
        directory = mkOption {
          type = types.str;
          readOnly = true;
          default = "/var/lib/acme/${name}";
        };
        domain = mkOption {
          type = types.str;
          default = name;
        };
        extraDomainNames = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        inheritDefaults = mkOption {
          type = types.bool;
          default = true;
        };
        s3Bucket = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
      };
    };
in
{
  options.security.acme = {
    acceptTerms = mkOption {
      type = types.bool;
      default = false;
    };
    defaults = mkOption {
      type = types.submodule (inheritable true);
      default = { };
    };
    certs = mkOption {
      type = types.attrsOf (
        types.submodule [
          (inheritable false)
          certificate
        ]
      );
      default = { };
    };
  };

  config = lib.mkIf (cfg.certs != { }) {
    assertions = [
      {
        assertion = cfg.acceptTerms;
        message = "You must accept the CA's terms of service before using the ACME module by setting `security.acme.acceptTerms` to `true`.";
      }
    ]
    ++ lib.mapAttrsToList (name: cert: {
      assertion =
        lib.length (
          lib.filter (value: value != null) [
            cert.dnsProvider
            cert.webroot
            cert.listenHTTP
            cert.s3Bucket
          ]
        ) == 1;
      message = "Exactly one of the options `security.acme.certs.${name}.dnsProvider`, `.webroot`, `.listenHTTP` and `.s3Bucket` is required.";
    }) cfg.certs;

    systemd.services = lib.concatMapAttrs (name: cert: {
      "acme-${name}".serviceConfig = {
        Type = "oneshot";
        Group = cert.group;
      };
      "acme-order-renew-${name}".serviceConfig = {
        Type = "oneshot";
        Group = cert.group;
      };
    }) cfg.certs;
    users.users.acme = {
      isSystemUser = true;
      group = "acme";
    };
    users.groups.acme = { };
  };
}
