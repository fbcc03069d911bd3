# Postfix: the rendered main.cf and master.cf through nixpkgs' services.postfix.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
in
{
  config = lib.mkIf cfg.enable {
    services.postfix = {
      enable = true;
      settings.main = cfg.rendered.postfixMain;
      # Forced per entry, so master.cf is exactly the rendered one (the same the harness runs)
      # while entries that only other modules add stay.
      settings.master = lib.mapAttrs (_: lib.mkForce) cfg.rendered.postfixMaster;
    };

    # Dovecot puts its SASL and LMTP sockets into the queue's private/ directory; have it
    # before either daemon starts (postfix-setup fixes owner and mode the same way).
    systemd.tmpfiles.rules = [
      "d ${cfg.rendered.paths.postfixQueueDir}/private 0700 ${config.services.postfix.user} - -"
    ];
  };
}
