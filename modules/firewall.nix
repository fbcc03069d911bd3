# The relay's public ports.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
in
{
  config = lib.mkIf (cfg.enable && cfg.openFirewall) {
    networking.firewall.allowedTCPPorts =
      lib.attrValues cfg.rendered.ports.public
      ++ lib.optional (cfg.tls.mode == "acme" || cfg.nginx.enable) 80
      ++ lib.optional cfg.nginx.enable 443;
  };
}
