# chatmaild: chatmail.ini, the vmail user and the doveauth / filtermail / chatmail-metadata /
# chatmail-metrics / chatmail-mxdeliv services.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
  inherit (cfg.rendered) paths;

  vmailHome = "/var/lib/vmail";

  # Each service's serviceConfig (confinement included) comes from render.nix, which also
  # renders it as a unit file for `systemd-analyze security --offline` (tests/nix).
  units = cfg.rendered.systemdUnits;

  daemonService = name: {
    inherit (units.${name}) description serviceConfig;
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    restartTriggers = [ cfg.rendered.chatmailIni ];
  };
in
{
  config = lib.mkIf cfg.enable {
    environment.etc =
      {
        "chatmail/chatmail.ini".text = cfg.rendered.chatmailIni;
      }
      // lib.optionalAttrs (cfg.rendered.appVersionsJson != null) {
        # read by chatmail-metadata at each lookup: a change needs no restart
        "chatmail/appversions.json".text = cfg.rendered.appVersionsJson;
      };

    users.users.${paths.vmailUser} = {
      isSystemUser = true;
      group = paths.vmailGroup;
      home = vmailHome;
      description = "chatmail mailbox owner";
    };
    users.groups.${paths.vmailGroup} = { };

    systemd.tmpfiles.rules = [
      "d ${vmailHome} 0750 ${paths.vmailUser} ${paths.vmailGroup} -"
      "d ${paths.mailboxesDir} 0700 ${paths.vmailUser} ${paths.vmailGroup} -"
    ]
    # filtermail's milter sockets: vmail writes them, Postfix's group may enter
    ++ map (dir: "d ${dir} 0750 ${paths.vmailUser} ${paths.postfixGroup} -") (
      lib.unique [
        (dirOf paths.filtermailSocket)
        (dirOf paths.filtermailIncomingSocket)
      ]
    );

    systemd.services = {
      doveauth = daemonService "doveauth";
      # Postfix defers mail while a milter is missing (milter_default_action = tempfail): start
      # them first
      filtermail = daemonService "filtermail" // {
        before = [ "postfix.service" ];
      };
      filtermail-incoming = daemonService "filtermail-incoming" // {
        before = [ "postfix.service" ];
      };
      chatmail-metadata = daemonService "chatmail-metadata";
      chatmail-metrics = lib.mkIf cfg.metrics.enable (daemonService "chatmail-metrics");
    }
    # relay-to-relay delivery over HTTPS (mxdeliv.nix), when rendered
    // lib.genAttrs (
      lib.filter (name: units ? ${name}) [
        "chatmail-mxdeliv"
        "chatmail-mxdeliv-outgoing"
      ]
    ) daemonService
    // {
      chatmail-expire = {
        inherit (units.chatmail-expire) description serviceConfig;
      };
    };

    systemd.timers.chatmail-expire = {
      description = "daily chatmail mailbox expiry";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = "*-*-* 00:02:00";
        Persistent = true;
        RandomizedDelaySec = "10min";
      };
    };
  };
}
