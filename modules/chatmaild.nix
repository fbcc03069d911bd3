# chatmaild: chatmail.ini, the vmail user and the doveauth / filtermail / chatmail-metadata
# services.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
  inherit (cfg.rendered) paths daemons;

  vmailHome = "/var/lib/vmail";

  # Confinement shared by every daemon and job: they need their sockets, chatmail.ini and
  # (doveauth, expire) the maildirs, nothing else.
  hardening = {
    User = paths.vmailUser;
    Group = paths.vmailGroup;
    UMask = "0007";
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectSystem = "strict";
    # Maildirs under /home (upstream's /home/vmail/mail/<domain>) stay reachable, read-only
    # except where ReadWritePaths allows.
    ProtectHome = if lib.hasPrefix "/home/" paths.mailboxesDir then "read-only" else true;
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
      serviceConfig =
        hardening
        // {
          ExecStart = lib.escapeShellArgs argv;
          Restart = "always";
          RestartSec = "2s";
        }
        // serviceConfig;
    };

  # Only the maildirs, no network at all.
  maildirsOnly = {
    PrivateNetwork = true;
    ReadWritePaths = [ paths.mailboxesDir ];
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
      doveauth = daemonService "chatmail account database for Dovecot (doveauth)" daemons.doveauth (
        maildirsOnly
        // {
          # Its own unix socket, for Dovecot's auth-worker and imap processes (user vmail).
          RestrictAddressFamilies = [ "AF_UNIX" ];
          RuntimeDirectory = baseNameOf (dirOf paths.doveauthSocket);
          RuntimeDirectoryMode = "0750";
        }
      );
      # Postfix's before-queue filters: outgoing from submission, incoming from port 25.
      filtermail = daemonService "chatmail filter for outgoing mail (filtermail)" daemons.filtermail loopbackOnly;
      filtermail-incoming = daemonService "chatmail filter for incoming mail (filtermail)" daemons.filtermail-incoming loopbackOnly;
      # IMAP METADATA for Dovecot (push tokens, in the maildirs) and the push notifications
      # themselves: HTTPS to services.chatmail.pushNotificationUrl.
      chatmail-metadata = daemonService "chatmail push notifications (chatmail-metadata)" daemons.metadata {
        ReadWritePaths = [ paths.mailboxesDir ];
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        # Its socket, for Dovecot's imap and lmtp processes (user vmail).
        RuntimeDirectory = baseNameOf (dirOf paths.metadataSocket);
        RuntimeDirectoryMode = "0750";
      };

      # Deletes old messages and inactive accounts (settings delete_*_after).
      chatmail-expire = {
        description = "chatmail mailbox expiry";
        serviceConfig =
          hardening
          // maildirsOnly
          // {
            Type = "oneshot";
            ExecStart = lib.escapeShellArgs cfg.rendered.jobs.expire;
            RestrictAddressFamilies = "none";
          };
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
