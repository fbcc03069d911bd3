# Dovecot 2.3: the rendered settings through nixpkgs' services.dovecot2.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.chatmail;
  dovecotPackage = config.services.dovecot2.package;
  # Above nixpkgs' own defaults (mkDefault), below anything set explicitly.
  overNixpkgsDefault = lib.mkOverride 900;
in
{
  config = lib.mkIf cfg.enable {
    services.dovecot2 = {
      enable = true;
      # The configuration is Dovecot 2.3's (upstream chatmail runs 2.3); nixpkgs 26.05 defaults
      # to 2.4, whose configuration language differs. nixpkgs builds it without Lua; the LMTP
      # push-notification script needs the mail_lua and push_notification_lua plugins.
      package = lib.mkDefault (pkgs.dovecot_2_3.override { withLua = true; });
      # Accounts come from doveauth (passdb/userdb dict), not from PAM or /etc/passwd.
      enablePAM = false;
      # vmail is created by chatmaild.nix.
      createMailUser = false;
      settings = lib.mkMerge [
        cfg.rendered.dovecot
        {
          # 2.4's name for mail_location; nixpkgs sets it by default, Dovecot 2.3 refuses it.
          mail_path = overNixpkgsDefault null;
          # nixpkgs points this at /run/current-system/sw; the package's own directory also
          # works where lib/dovecot is not linked into the system profile.
          mail_plugin_dir = overNixpkgsDefault "${dovecotPackage}/lib/dovecot/modules";
        }
      ];
    };

    # At paths.dovecotAuthDictConf (default.nix), where passdb/userdb `args` point.
    environment.etc."dovecot/chatmail-auth-dict.conf".text = cfg.rendered.dovecotAuthDictConf;
    # At paths.pushNotificationLua (default.nix), where push_notification_driver points.
    environment.etc."dovecot/push_notification.lua".text = cfg.rendered.pushNotificationLua;
  };
}
