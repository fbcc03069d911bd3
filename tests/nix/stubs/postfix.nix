# nixpkgs' services.postfix as far as modules/ meets it: the typed main.cf options, the
# master.cf entry submodule, and the values nixpkgs itself defines (with their priorities), so
# that conflicting definitions fail here as they would on NixOS.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.services.postfix;
  nullable =
    type: default:
    mkOption {
      type = types.nullOr type;
      inherit default;
    };
  # nixpkgs declares these without defaults; null stands for "not defined" here.
  masterEntry =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
        };
        type = mkOption {
          type = types.enum [
            "inet"
            "unix"
            "unix-dgram"
            "fifo"
            "pass"
          ];
          default = "unix";
        };
        private = nullable types.bool null;
        privileged = nullable types.bool null;
        chroot = nullable types.bool null;
        wakeup = nullable types.int null;
        wakeupUnusedComponent = nullable types.bool null;
        maxproc = nullable types.int null;
        command = mkOption {
          type = types.str;
          default = name;
        };
        args = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
      };
    };
in
{
  options.services.postfix = {
    enable = mkOption {
      type = types.bool;
      default = false;
    };
    package = mkOption {
      type = types.package;
      default = pkgs.postfix;
    };
    user = mkOption {
      type = types.str;
      default = "postfix";
    };
    group = mkOption {
      type = types.str;
      default = "postfix";
    };
    settings.main = mkOption {
      default = { };
      type = types.submodule {
        freeformType = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.bool
              types.int
              types.str
              (types.listOf types.str)
            ]
          )
        );
        options = {
          message_size_limit = nullable types.int 10240000;
          mydestination = nullable (types.oneOf [
            types.str
            (types.listOf types.str)
          ]) [ "$myhostname" "localhost.$mydomain" "localhost" ];
          myhostname = nullable types.str null;
          mynetworks = nullable (types.listOf types.str) null;
          mynetworks_style = nullable (types.enum [
            "host"
            "subnet"
            "class"
          ]) "host";
          recipient_delimiter = nullable types.str "";
          relayhost = nullable (types.listOf types.str) [ ];
          relay_domains = nullable (types.listOf types.str) [ ];
          smtp_tls_CAfile = mkOption {
            type = types.path;
            default = config.security.pki.caBundle;
          };
          smtp_tls_security_level = mkOption {
            type = types.enum [
              "none"
              "may"
              "encrypt"
              "dane"
              "dane-only"
              "fingerprint"
              "verify"
              "secure"
            ];
            default = "may";
          };
          smtpd_tls_chain_files = mkOption {
            type = types.listOf types.path;
            default = [ ];
          };
          smtpd_tls_security_level = mkOption {
            type = types.enum [
              "none"
              "may"
              "encrypt"
            ];
            default = "none";
          };
        };
      };
    };
    settings.master = mkOption {
      type = types.attrsOf (types.submodule masterEntry);
      default = { };
    };
  };

  config = lib.mkIf cfg.enable {
    services.postfix.settings.main =
      lib.mapAttrs (_: lib.mkDefault) {
        compatibility_level = cfg.package.version;
        mail_owner = cfg.user;
        default_privs = "nobody";
        data_directory = "/var/lib/postfix/data";
        queue_directory = "/var/lib/postfix/queue";
        meta_directory = "${cfg.package}/etc/postfix";
        command_directory = "${cfg.package}/bin";
        daemon_directory = "${cfg.package}/libexec/postfix";
        readme_directory = false;
        shlib_directory = false;
        mail_spool_directory = "/var/spool/mail/";
        setgid_group = "postdrop";
      }
      # nixpkgs: postmasterAlias defaults to "root", so this is always defined.
      // {
        alias_maps = [ "hash:/etc/postfix/aliases" ];
      };

    services.postfix.settings.master = {
      pickup = {
        private = false;
        wakeup = 60;
        maxproc = 1;
      };
      cleanup = {
        private = false;
        maxproc = 0;
      };
      qmgr = {
        private = false;
        wakeup = 300;
        maxproc = 1;
      };
      tlsmgr = {
        wakeup = 1000;
        wakeupUnusedComponent = false;
        maxproc = 1;
      };
      rewrite.command = "trivial-rewrite";
      bounce.maxproc = 0;
      defer = {
        maxproc = 0;
        command = "bounce";
      };
      trace = {
        maxproc = 0;
        command = "bounce";
      };
      verify.maxproc = 1;
      flush = {
        private = false;
        wakeup = 1000;
        wakeupUnusedComponent = false;
        maxproc = 0;
      };
      proxymap.command = "proxymap";
      proxywrite = {
        maxproc = 1;
        command = "proxymap";
      };
      showq.private = false;
      error = { };
      retry.command = "error";
      discard = { };
      local.privileged = true;
      virtual.privileged = true;
      lmtp = { };
      anvil.maxproc = 1;
      scache.maxproc = 1;
      smtp_inet = {
        name = "smtp";
        type = "inet";
        private = false;
        command = "smtpd";
      };
      smtp = { };
      relay = {
        command = "smtp";
        args = [
          "-o"
          "smtp_fallback_relay="
        ];
      };
    };

    users.users.postfix.group = cfg.group;
    users.groups.postfix = { };
    systemd.services.postfix = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig.Type = "forking";
    };
    systemd.services.postfix-setup.serviceConfig.Type = "oneshot";
  };
}
