# services.dovecot2 in its newest form: `settings` is a submodule with typed options
# (auth_mechanisms is `(attrsOf bool) or (listOf str)`, base_dir a path, ...) over a freeform
# of Dovecot values; enableImap/enableLmtp/enablePop3/enableDHE/sslServerCert are removed (setting
# one is an error); user/group are gone (settings.default_internal_user/_group instead); enablePAM
# defaults to false; nothing sets "service auth".user; the unit is `dovecot`, and an assertion
# refuses definitions on a `dovecot2` unit. Checked on 2026-12-01 against
# nixos/modules/services/mail/dovecot.nix of a fork at commit 4aa6836a648c (44,010 characters;
# plain settings written before sections at each level): option names, types, defaults, what it
# sets and with which priority, its assertions. Only what modules/ meets is declared; sieve,
# imapsieve and mailPlugins are left out.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkDefault mkIf mkOption types;
  cfg = config.services.dovecot2;
  common = import ./dovecot-common.nix lib;
  isPre24 = lib.versionOlder cfg.package.version "2.4";
  value = common.value { withPath = true; };
  ownSection =
    options:
    types.nullOr (
      types.submodule [
        (common.sectionModule {
          withPath = true;
          readOnly = true;
        })
        { inherit options; }
      ]
    );
  setting =
    type: default:
    mkOption {
      inherit type default;
    };
  enabledList = types.oneOf [
    (types.attrsOf types.bool)
    (types.listOf types.str)
  ];
  inherit (common) removed;
in
{
  imports = [
    (removed "modules" "Use environment.systemPackages.")
    (removed "enablePop3" "Set services.dovecot2.settings.protocols.pop3 = true/false; instead.")
    (removed "enableImap" "Set services.dovecot2.settings.protocols.imap = true/false; instead.")
    (removed "enableLmtp" "Set services.dovecot2.settings.protocols.lmtp = true/false; instead.")
    (removed "sslServerCert" "Use settings.ssl_cert (2.3) or settings.ssl_server_cert_file (2.4).")
    (removed "sslServerKey" "Use settings.ssl_key (2.3) or settings.ssl_server_key_file (2.4).")
    (removed "sslCACert" "Use settings.ssl_ca (2.3) or settings.ssl_server_ca_file (2.4).")
    (removed "mailLocation" "Use settings.mail_location (2.3) or settings.mail_path (2.4).")
    (removed "enableDHE" "Use ECDHE instead, or the recommended parameters of RFC 7919.")
    (removed "extraConfig" "Please use services.dovecot2.settings instead.")
    (removed "mailboxes" "Please use services.dovecot2.settings instead.")
  ];

  options.services.dovecot2 = {
    enable = setting types.bool false;
    # nixpkgs: pkgs.dovecot (2.4) from stateVersion 26.05 on, else pkgs.dovecot_2_3
    package = setting types.package pkgs.dovecot;
    configFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      apply = file: if file != null then file else pkgs.writeText "dovecot.conf" (common.writeSettingsFirst cfg.settings);
    };
    includeFiles = setting (types.listOf types.path) [ ];
    createMailUser = setting types.bool true;
    enablePAM = setting types.bool false;
    showPAMFailure = setting types.bool false;
    settings = mkOption {
      default = { };
      type = types.submodule {
        freeformType = types.attrsOf value;
        options = {
          auth_mechanisms = setting enabledList [
            "plain"
            "login"
          ];
          base_dir = setting types.path "/run/dovecot2";
          default_internal_group = setting types.str "dovecot2";
          default_internal_user = setting types.str "dovecot2";
          dovecot_config_version = setting (types.nullOr types.str) null;
          dovecot_storage_version = setting (types.nullOr types.str) null;
          mail_plugin_dir = setting types.path "/run/current-system/sw/lib/dovecot/modules";
          maildir_copy_with_hardlinks = setting types.bool true;
          "passdb pam" = setting (ownSection {
            args = setting (types.nullOr (types.listOf types.str)) null;
            driver = setting (types.nullOr types.str) (if isPre24 then "pam" else null);
            failure_show_msg = setting (types.nullOr types.bool) (if isPre24 then null else cfg.showPAMFailure);
            service_name = setting (types.nullOr types.str) (if isPre24 then null else "dovecot2");
          }) null;
          plugin = setting (ownSection {
            sieve_extensions = setting (types.nullOr (types.listOf types.str)) null;
            sieve_global_extensions = setting (types.nullOr (types.listOf types.str)) null;
            sieve_pipe_bin_dir = setting (types.nullOr types.path) null;
            sieve_plugins = setting (types.nullOr (types.listOf types.str)) null;
          }) null;
          sendmail_path = setting types.path "/run/wrappers/bin/sendmail";
          sieve_global_extensions = setting (types.nullOr enabledList) null;
          sieve_pipe_bin_dir = setting (types.nullOr types.path) null;
          sieve_plugins = setting (types.nullOr enabledList) null;
          # nixpkgs: "/tmp/dovecot-%{user|username|lower}" for 2.4 with the pigeonhole plugin
          sieve_script_bin_path = setting (types.nullOr types.str) null;
          "userdb passwd" = setting (ownSection {
            driver = setting (types.nullOr types.str) (if isPre24 then "passwd" else null);
          }) null;
        };
      };
    };
  };

  config = mkIf cfg.enable (
    lib.mkMerge [
      (common.accounts {
        inherit cfg;
        internalUser = cfg.settings.default_internal_user;
        internalGroup = cfg.settings.default_internal_group;
      })
      (common.service {
        inherit cfg;
        unit = "dovecot";
        serviceConfig = {
          ProtectSystem = "full";
          PrivateTmp = true;
        };
      })
      {
        assertions = [
          {
            assertion = isPre24 || cfg.settings.dovecot_config_version != null;
            message = "services.dovecot2: Since Dovecot 2.4, the option 'services.dovecot2.settings.dovecot_config_version' must be explicitly set.";
          }
          {
            assertion = isPre24 || cfg.settings.dovecot_storage_version != null;
            message = "services.dovecot2: Since Dovecot 2.4, the option 'services.dovecot2.settings.dovecot_storage_version' must be explicitly set.";
          }
          {
            assertion = cfg.showPAMFailure -> cfg.enablePAM;
            message = "dovecot is configured with showPAMFailure while enablePAM is disabled";
          }
          {
            assertion = config.systemd.services ? dovecot2 == false;
            message = "Your configuration sets options on the `dovecot2` systemd service. These have no effect until they're migrated to the `dovecot` service.";
          }
        ];

        security.pam.services.dovecot2 = mkIf cfg.enablePAM { };

        services.dovecot2.settings = lib.mkMerge [
          (mkIf isPre24 {
            mail_plugins = mkDefault "$mail_plugins ";
            "passdb pam" = mkIf cfg.enablePAM { args = [ "dovecot2" ]; };
            # sieve settings, none without sieve options
            plugin = { };
            "userdb passwd" = mkIf cfg.enablePAM { };
          })
          (mkIf (!isPre24) {
            "passdb pam" = mkIf cfg.enablePAM { };
            "userdb passwd" = mkIf cfg.enablePAM { };
          })
        ];
      }
    ]
  );
}
