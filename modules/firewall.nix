# The relay's public ports.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
  inherit (cfg.rendered.realtime) turn;
in
{
  config = lib.mkIf (cfg.enable && cfg.openFirewall) (
    lib.mkMerge [
      {
        networking.firewall.allowedTCPPorts =
          lib.attrValues cfg.rendered.ports.public
          ++ lib.optional (cfg.tls.mode == "acme" || cfg.nginx.enable) 80
          ++ lib.optional cfg.nginx.enable 443;
      }
      # TURN: clients over UDP and TCP, relayed addresses over UDP
      (lib.mkIf cfg.turn.enable {
        networking.firewall = {
          allowedTCPPorts = [ turn.port ];
          allowedUDPPorts = [ turn.port ];
          allowedUDPPortRanges = [
            {
              from = turn.minPort;
              to = turn.maxPort;
            }
          ];
        };
      })
    ]
  );
}
