# OpenDKIM (nixpkgs' services.opendkim): signs what leaves through Postfix's submission services
# and what Postfix writes itself (bounces, notices); incoming mail is verified by filtermail
# (render-discovery.nix has the settings, render.nix the milter lists). nixpkgs' unit generates the key on first start into its state directory
# (/var/lib/opendkim/keys/<selector>.private), never into the Nix store; `chatmail-dns-zone`
# prints the DNS record for it.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
  inherit (cfg.rendered.discovery) opendkim;
in
{
  options.services.chatmail.dkim = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether outgoing mail, bounces included, is DKIM-signed (OpenDKIM) and incoming mail must
        carry a valid DKIM signature whose domain is the domain of its From address (filtermail;
        refused with `554 5.7.1` otherwise, as upstream does).
      '';
    };
    selector = lib.mkOption {
      type = lib.types.strMatching "[a-z0-9][a-z0-9-]*";
      default = "opendkim";
      description = ''
        DKIM selector: the key is published at `<selector>._domainkey.<domain>` and kept in
        `/var/lib/opendkim/keys/<selector>.private`. A new selector means a new key (and a new
        DNS record).
      '';
    };
  };

  config = lib.mkIf (cfg.enable && cfg.dkim.enable) {
    services.opendkim = {
      enable = true;
      inherit (opendkim) selector domains;
      keyPath = dirOf opendkim.keyFile;
      socket = "local:${opendkim.socket}";
      configFile = "/etc/opendkim/chatmail.conf";
    };
    environment.etc."opendkim/chatmail.conf".text = opendkim.extraConf;

    # Postfix connects to the milter socket through OpenDKIM's group.
    users.users.${config.services.postfix.user}.extraGroups = [ config.services.opendkim.group ];
    systemd.services.opendkim = {
      restartTriggers = [ opendkim.extraConf ];
      serviceConfig = {
        UMask = lib.mkForce "0007";
        RuntimeDirectoryMode = "0750";
      };
    };
    systemd.services.postfix = {
      wants = [ "opendkim.service" ];
      after = [ "opendkim.service" ];
    };
  };
}
