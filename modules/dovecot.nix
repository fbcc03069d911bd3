# Dovecot 2.3: the rendered settings through nixpkgs' services.dovecot2. Written for both forms
# of that module since its RFC 42 rewrite (docs/nixpkgs-compat.md): the first (NixOS/nixpkgs pull
# request 500271: enableImap, enableDHE, user/group, unit dovecot2) and the newest (typed settings,
# those options removed, unit dovecot); both write the same dovecot.conf from what this file sets.
{
  config,
  lib,
  options,
  pkgs,
  ...
}:

let
  cfg = config.services.chatmail;
  dovecotPackage = config.services.dovecot2.package;
  # Above nixpkgs' own defaults (mkDefault), below anything set explicitly.
  overNixpkgsDefault = lib.mkOverride 900;
  # True where the option is a real one; the newest module keeps removed options only as
  # mkRemovedOptionModule declarations (untyped), which refuse any definition.
  hasDovecotOption = name: (options.services.dovecot2.${name}.type.name or null) == "bool";
in
{
  config = lib.mkIf cfg.enable {
    services.dovecot2 = {
      enable = true;
      # The configuration is Dovecot 2.3's (upstream chatmail runs 2.3); nixpkgs 26.05 defaults
      # to 2.4, whose configuration language differs. With Lua and, by default, without the
      # 500 ms IDLE notification delay (pkgs/dovecot/overlay.nix applied to this one package: a
      # module cannot add nixpkgs.overlays where pkgs is read-only, as in NixOS tests).
      package = lib.mkDefault (
        import ../pkgs/dovecot {
          inherit (pkgs) dovecot_2_3;
          withoutNotifyDelay = cfg.dovecotWithoutNotifyDelay;
        }
      );
      # Accounts come from doveauth (passdb/userdb dict), not from PAM or /etc/passwd.
      enablePAM = false;
      # vmail is created by chatmaild.nix.
      createMailUser = false;
      settings = lib.mkMerge [
        cfg.rendered.dovecot
        {
          # nixpkgs points this at /run/current-system/sw; the package's own directory also
          # works where lib/dovecot is not linked into the system profile.
          mail_plugin_dir = overNixpkgsDefault "${dovecotPackage}/lib/dovecot/modules";
          # The older module sets "service auth".user = "root" with ordinary priority; the
          # rendered (unprivileged) user wins over it, as the newest module sets none.
          "service auth".user = lib.mkForce cfg.rendered.dovecot."service auth".user;
          # No POP3 here; the older module's default for it would be the only line the two
          # generations write differently.
          pop3_uidl_format = overNixpkgsDefault null;
        }
      ];
    }
    # The older module generates DH parameters at boot and sets ssl_dh from them; TLS 1.3 only
    # (ssl_min_protocol) has no use for them.
    // lib.optionalAttrs (hasDovecotOption "enableDHE") { enableDHE = false; };

    # Each IMAP session in IDLE holds an inotify instance of vmail. Beyond the kernel's default
    # limit of 128 per user, Dovecot stops watching ("Inotify instance limit ... exceeded,
    # disabling") and those sessions hear of new mail only at the next mailbox_idle_check_interval
    # (30 s): measured on the harness, 140 IDLE sessions, the last ones got EXISTS 28–30 s after
    # delivery. nixpkgs raises the limit to this value only for graphical desktops (at mkDefault,
    # which this overrides with the same value).
    boot.kernel.sysctl."fs.inotify.max_user_instances" = overNixpkgsDefault 524288;

    # At paths.dovecotAuthDictConf (default.nix), where passdb/userdb `args` point.
    environment.etc."dovecot/chatmail-auth-dict.conf".text = cfg.rendered.dovecotAuthDictConf;
    # At paths.pushNotificationLua (default.nix), where push_notification_driver points.
    environment.etc."dovecot/push_notification.lua".text = cfg.rendered.pushNotificationLua;
  };
}
