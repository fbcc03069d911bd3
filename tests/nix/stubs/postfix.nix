# services.postfix as far as modules/ meets it: the typed main.cf options (names, types, defaults),
# the master.cf entry submodule (its fields have no default: an entry shows "-" for each field no
# definition sets), the values the real module defines (main.cf at mkDefault, alias_maps and the
# master.cf entries at normal priority), and main.cf/master.cf written as it writes them. Checked on
# 2026-12-01 against nixos/modules/services/mail/postfix.nix of a fork at commit 4aa6836a648c (it
# declares no assertions).
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
  undefinedUnlessSet = type: mkOption { inherit type; };
  masterFields = [
    "private"
    "privileged"
    "chroot"
    "wakeup"
    "wakeupUnusedComponent"
    "maxproc"
  ];
  masterEntry =
    {
      name,
      config,
      options,
      ...
    }:
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
        private = undefinedUnlessSet types.bool;
        privileged = undefinedUnlessSet types.bool;
        chroot = undefinedUnlessSet types.bool;
        wakeup = undefinedUnlessSet types.int;
        wakeupUnusedComponent = undefinedUnlessSet types.bool;
        maxproc = undefinedUnlessSet types.int;
        command = mkOption {
          type = types.str;
          default = name;
        };
        args = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        # stub only: the fields some definition sets (the real module's rawEntry writes "-" for others)
        defined = mkOption {
          type = types.attrsOf types.anything;
          readOnly = true;
          default =
            {
              inherit (config) name type command args;
            }
            // lib.genAttrs (lib.filter (field: options.${field}.isDefined) masterFields) (
              field: config.${field}
            );
        };
      };
    };

  # main.cf and master.cf as the real module writes them
  mainCf = lib.concatStringsSep "\n" (
    lib.mapAttrsToList (
      name: value:
      "${lib.replaceStrings [ "$" ] [ "$$" ] name} ="
      + (
        if lib.isList value then
          "\n  " + lib.concatStringsSep ",\n  " value
        else
          " "
          + (
            if value == true then
              "yes"
            else if value == false then
              "no"
            else
              toString value
          )
      )
    ) (lib.filterAttrsRecursive (_: value: value != null) cfg.settings.main)
  );
  masterLine =
    entry:
    let
      yn = b: if b then "y" else "n";
      column = field: show: if entry ? ${field} then show entry.${field} else "-";
    in
    lib.concatStringsSep "  " [
      entry.name
      entry.type
      (column "private" yn)
      (column "privileged" (b: yn (!b)))
      (column "chroot" yn)
      (column "wakeup" (
        w: toString w + lib.optionalString ((entry.wakeupUnusedComponent or true) == false) "?"
      ))
      (column "maxproc" toString)
      (
        entry.command
        + " "
        + lib.concatMapStringsSep " " (arg: lib.optionalString (lib.hasPrefix "-" arg) "\n  " + arg) entry.args
      )
    ];
  masterCf = lib.concatMapStringsSep "\n" (entry: masterLine entry.defined) (
    lib.attrValues cfg.settings.master
  );
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
    enableSmtp = mkOption {
      type = types.bool;
      default = true;
    };
    enableSubmission = mkOption {
      type = types.bool;
      default = false;
    };
    enableSubmissions = mkOption {
      type = types.bool;
      default = false;
    };
    setgidGroup = mkOption {
      type = types.str;
      default = "postdrop";
    };
    postmasterAlias = mkOption {
      type = types.str;
      default = "root";
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
              types.path
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
            default = if cfg.settings.main.smtpd_tls_chain_files != [ ] then "may" else "none";
          };
        };
      };
    };
    settings.master = mkOption {
      type = types.attrsOf (types.submodule masterEntry);
      default = { };
    };
    # stub only: the files the real module writes (pkgs.writeText "postfix-main.cf" / "-master.cf")
    writtenMainCf = mkOption {
      type = types.str;
      readOnly = true;
      default = mainCf;
    };
    writtenMasterCf = mkOption {
      type = types.str;
      readOnly = true;
      default = masterCf;
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
        html_directory = "${cfg.package}/share/postfix/doc/html";
        manpage_directory = "${cfg.package}/share/man";
        sample_directory = "/etc/postfix";
        mailq_path = "${cfg.package}/bin/mailq";
        newaliases_path = "${cfg.package}/bin/newaliases";
        sendmail_path = "${cfg.package}/bin/sendmail";
        mail_spool_directory = "/var/spool/mail/";
        setgid_group = cfg.setgidGroup;
      }
      # postmasterAlias defaults to "root", so the aliases map is there by default
      // lib.optionalAttrs (cfg.postmasterAlias != "") {
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
    }
    # (enableSubmission/enableSubmissions add `submission`/`submissions`; modules/ leaves them off)
    // lib.optionalAttrs cfg.enableSmtp {
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

    users.users = lib.optionalAttrs (cfg.user == "postfix") { postfix.group = cfg.group; };
    users.groups =
      lib.optionalAttrs (cfg.group == "postfix") { postfix = { }; }
      // lib.optionalAttrs (cfg.setgidGroup == "postdrop") { postdrop = { }; };
    systemd.services.postfix = {
      description = "Postfix mail server";
      after = [
        "network.target"
        "postfix-setup.service"
      ];
      requires = [ "postfix-setup.service" ];
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        Type = "forking";
        Restart = "always";
        ProtectSystem = "full";
      };
    };
    systemd.services.postfix-setup.serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
  };
}
