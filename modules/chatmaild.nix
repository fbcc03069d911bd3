# chatmaild: chatmail.ini, the vmail user and the doveauth / filtermail services.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
  inherit (cfg.rendered) paths daemons;

  vmailHome = "/var/lib/vmail";

  # Confinement shared by every daemon: they need their sockets, chatmail.ini and (doveauth)
  # the maildirs, nothing else.
  hardening = {
    User = paths.vmailUser;
    Group = paths.vmailGroup;
    Restart = "always";
    RestartSec = "2s";
    UMask = "0007";
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    ProtectClock = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectControlGroups = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallErrorNumber = "EPERM";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "~@resources"
    ];
  };

  daemonService =
    description: argv: serviceConfig:
    {
      inherit description;
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      restartTriggers = [ cfg.rendered.chatmailIni ];
      serviceConfig = hardening // { ExecStart = lib.escapeShellArgs argv; } // serviceConfig;
    };

  # filtermail talks SMTP on loopback only.
  loopbackOnly = {
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    IPAddressDeny = "any";
    IPAddressAllow = "localhost";
  };
in
{
  config = lib.mkIf cfg.enable {
    environment.etc."chatmail/chatmail.ini".text = cfg.rendered.chatmailIni;

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
    ];

    systemd.services = {
      # Dovecot's passdb/userdb: creates an account on its first login.
      doveauth = daemonService "chatmail account database for Dovecot (doveauth)" daemons.doveauth {
        # Only its unix socket: no network at all.
        PrivateNetwork = true;
        RestrictAddressFamilies = [ "AF_UNIX" ];
        RuntimeDirectory = baseNameOf (dirOf paths.doveauthSocket);
        RuntimeDirectoryMode = "0750";
        ReadWritePaths = [ paths.mailboxesDir ];
      };
      # Postfix's before-queue filters: outgoing from submission, incoming from port 25.
      filtermail = daemonService "chatmail filter for outgoing mail (filtermail)" daemons.filtermail loopbackOnly;
      filtermail-incoming = daemonService "chatmail filter for incoming mail (filtermail)" daemons.filtermail-incoming loopbackOnly;
    };
  };
}
