# journald: the relay's logs in memory only, for a limited time (upstream's journald.conf).
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
in
{
  config = lib.mkIf (cfg.enable && cfg.logRetention != null) {
    services.journald = {
      # mkDefault: a storage chosen explicitly elsewhere wins
      storage = lib.mkDefault "volatile";
      extraConfig = "MaxRetentionSec=${cfg.logRetention}";
    };
  };
}
