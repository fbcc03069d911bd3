# nixpkgs 26.05's services.dovecot2 (the RFC 42 `settings` module) as far as modules/ meets it,
# with the values nixpkgs defines for a Dovecot 2.3 package and their priorities.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.services.dovecot2;
  flag =
    default:
    mkOption {
      type = types.bool;
      inherit default;
    };
  atom = types.nullOr (
    types.oneOf [
      types.int
      types.str
      types.bool
      (types.attrsOf atom)
    ]
  );
in
{
  options.services.dovecot2 = {
    enable = flag false;
    enableImap = flag true;
    enableLmtp = flag false;
    enablePop3 = flag false;
    enablePAM = flag true;
    enableDHE = flag true;
    createMailUser = flag true;
    package = mkOption {
      type = types.package;
      default = pkgs.dovecot;
    };
    user = mkOption {
      type = types.str;
      default = "dovecot2";
    };
    group = mkOption {
      type = types.str;
      default = "dovecot2";
    };
    sslServerCert = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
    settings = mkOption {
      type = types.attrsOf (types.either atom (types.listOf atom));
      default = { };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.versionOlder cfg.package.version "2.4";
        message = "stub: this relay's Dovecot settings are for 2.3, the package is ${cfg.package.version}";
      }
    ];
    services.dovecot2.settings = {
      base_dir = lib.mkDefault "/run/dovecot2";
      sendmail_path = lib.mkDefault "/run/wrappers/bin/sendmail";
      mail_plugin_dir = lib.mkDefault "/run/current-system/sw/lib/dovecot/modules";
      mail_path = lib.mkDefault "maildir:/var/spool/mail/%u";
      default_internal_user = lib.mkDefault cfg.user;
      default_internal_group = lib.mkDefault cfg.group;
      maildir_copy_with_hardlinks = lib.mkDefault true;
      pop3_uidl_format = lib.mkDefault "%08Xv%08Xu";
      auth_mechanisms = lib.mkDefault "plain login";
      "service auth".user = "root";
      protocols = lib.mkDefault (
        lib.optional cfg.enableImap "imap"
        ++ lib.optional cfg.enablePop3 "pop3"
        ++ lib.optional cfg.enableLmtp "lmtp"
      );
      mail_plugins = lib.mkDefault "$mail_plugins ";
      ssl = lib.mkDefault (cfg.sslServerCert != null);
      disable_plaintext_auth = lib.mkDefault (cfg.sslServerCert != null);
      passdb = lib.mkIf cfg.enablePAM (
        lib.mkDefault {
          driver = "pam";
          args = "dovecot2";
        }
      );
      userdb = lib.mkIf cfg.enablePAM (lib.mkDefault { driver = "passwd"; });
    };
    users.users.dovenull.group = "dovenull";
    users.users.dovecot2.group = cfg.group;
    users.groups.dovenull = { };
    users.groups.dovecot2 = { };
    environment.etc."dovecot/dovecot.conf".source = "/nix/store/stub-dovecot.conf";
    systemd.services.dovecot2 = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig.Type = "notify";
    };
  };
}
