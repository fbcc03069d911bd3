# services.dovecot2 as NixOS/nixpkgs pull request 500271 made it (merged 2026-04; the first RFC 42
# `settings` form): untyped `settings` whose sections carry `_section`, enableImap/enableLmtp/
# enablePop3/enableDHE, user/group, enablePAM on by default, "service auth".user = root at normal
# priority, the unit `dovecot2`. Checked on 2026-12-01 against nixos/modules/services/mail/dovecot.nix
# of that form (a fork's copy, 30,209 characters; enableImap still declared, `_section` titles,
# extraConfig appended): option names, types, defaults, what it sets and with which priority, its
# assertions. Only what modules/ meets is declared; sieve, mailboxes and mailPlugins are left out.
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
  is24 = lib.versionAtLeast cfg.package.version "2.4";
  flag =
    default:
    mkOption {
      type = types.bool;
      inherit default;
    };
  inherit (common) removed;
in
{
  imports = [
    (removed "modules" "Use environment.systemPackages.")
    (removed "sslServerCert" "Use settings.ssl_cert (2.3) or settings.ssl_server_cert_file (2.4).")
    (removed "sslServerKey" "Use settings.ssl_key (2.3) or settings.ssl_server_key_file (2.4).")
    (removed "sslCACert" "Use settings.ssl_ca (2.3) or settings.ssl_server_ca_file (2.4).")
    (removed "mailLocation" "Use settings.mail_location (2.3) or settings.mail_home (2.4).")
  ];

  options.services.dovecot2 = {
    enable = flag false;
    # nixpkgs: pkgs.dovecot (2.4) from stateVersion 25.11 on, else pkgs.dovecot_2_3
    package = mkOption {
      type = types.package;
      default = pkgs.dovecot;
    };
    settings = mkOption {
      type = types.attrsOf (common.value { withPath = false; });
      default = { };
    };
    enablePop3 = flag false;
    enableImap = flag true;
    enableLmtp = flag false;
    user = mkOption {
      type = types.str;
      default = "dovecot2";
    };
    group = mkOption {
      type = types.str;
      default = "dovecot2";
    };
    extraConfig = mkOption {
      type = types.lines;
      default = "";
    };
    configFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      apply =
        file:
        if file != null then
          file
        else
          pkgs.writeText "dovecot.conf" (
            lib.concatStringsSep "\n" [
              (common.writeInKeyOrder cfg.settings)
              cfg.extraConfig
            ]
          );
    };
    includeFiles = mkOption {
      type = types.listOf types.path;
      default = [ ];
    };
    createMailUser = flag true;
    enablePAM = flag true;
    enableDHE = flag true;
    showPAMFailure = flag false;
  };

  config = mkIf cfg.enable (
    lib.mkMerge [
      (common.accounts {
        inherit cfg;
        internalUser = cfg.user;
        internalGroup = cfg.group;
      })
      (common.service {
        inherit cfg;
        unit = "dovecot2";
      })
      {
        security.pam.services.dovecot2 = mkIf cfg.enablePAM { };
        security.dhparams = mkIf cfg.enableDHE {
          enable = true;
          params.dovecot2 = { };
        };

        services.dovecot2.settings = {
          dovecot_config_version = mkIf is24 cfg.package.version;
          dovecot_storage_version = mkIf is24 cfg.package.version;
          base_dir = mkDefault "/run/dovecot2";
          sendmail_path = mkDefault "/run/wrappers/bin/sendmail";
          mail_plugin_dir = mkDefault "/run/current-system/sw/lib/dovecot/modules";
          default_internal_user = mkDefault cfg.user;
          default_internal_group = mkDefault cfg.group;
          maildir_copy_with_hardlinks = mkDefault true;
          pop3_uidl_format = mkDefault (if is24 then "%{uidvalidity}%{uid}" else "%08Xv%08Xu");
          auth_mechanisms = mkDefault "plain login";
          "service auth".user = "root";
          protocols = mkDefault (
            lib.optional cfg.enableImap "imap"
            ++ lib.optional cfg.enablePop3 "pop3"
            ++ lib.optional cfg.enableLmtp "lmtp"
          );
          mail_plugins = mkDefault "$mail_plugins ";
        }
        // (
          if is24 then
            {
              mail_home = mkDefault "/var/spool/mail/%{user}";
              ssl_server_dh_file = mkIf cfg.enableDHE (mkDefault config.security.dhparams.params.dovecot2.path);
              "passdb pam" = mkIf cfg.enablePAM (mkDefault {
                driver = "pam";
                service_name = "dovecot2";
              });
              "userdb passwd" = mkIf cfg.enablePAM (mkDefault { driver = "passwd"; });
            }
          else
            {
              mail_location = mkDefault "maildir:/var/spool/mail/%u";
              ssl_dh = mkIf cfg.enableDHE (mkDefault "<${config.security.dhparams.params.dovecot2.path}");
              passdb = mkIf cfg.enablePAM (mkDefault {
                driver = "pam";
                args = " dovecot2";
              });
              userdb = mkIf cfg.enablePAM (mkDefault { driver = "passwd"; });
              # sieve settings, none without sieve options
              plugin = { };
            }
        );

        assertions = [
          {
            assertion = cfg.showPAMFailure -> cfg.enablePAM;
            message = "dovecot is configured with showPAMFailure while enablePAM is disabled";
          }
        ];
      }
    ]
  );
}
