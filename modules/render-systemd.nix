# render-systemd.nix — the systemd services of the chatmaild daemons and jobs, builtins only.
#
# One source for the NixOS module (modules/chatmaild.nix takes each `serviceConfig` from here)
# and for checking the confinement offline: `text` is the same service as a unit file, which
# tests/nix feeds to `systemd-analyze security --offline=true` (every unit must stay at an
# exposure of 2.0 or less).
#
# ARGUMENTS  { paths, daemons, jobs, newemail, turn, metrics } as render.nix computes them
#            (newemail: the chatmail-newemail argv of render-discovery.nix; modules/nginx.nix runs
#            that unit; turn: { socket, secretFile } of render-realtime.nix, for the unit
#            chatmail-turn-credentials, present when daemons has `turn-credentials`; metrics:
#            render.nix's metrics params, for chatmail-metrics when daemons has `metrics`).
# RESULT     attrset unit name -> { description; serviceConfig; text; }
#            serviceConfig: values as nixpkgs' systemd.services.<name>.serviceConfig takes them
#            (strings, bools, lists of strings); text: the unit file ([Unit] and [Service]).
{
  paths,
  daemons,
  jobs,
  newemail,
  # { socket, secretFile } of render-realtime.nix: the credentials unit's socket directory, and
  # the secret it reads as a systemd credential
  turn,
  metrics,
}:
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    isBool
    isList
    mapAttrs
    match
    removeAttrs
    replaceStrings
    substring
    ;

  # Confinement shared by every daemon and job: they need their sockets, chatmail.ini and
  # (doveauth, metadata, expire) the maildirs, nothing else.
  hardening = {
    User = paths.vmailUser;
    Group = paths.vmailGroup;
    UMask = "0007";
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    PrivateTmp = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    PrivateMounts = true;
    PrivateUsers = true;
    ProtectSystem = "strict";
    # Maildirs under /home (upstream's /home/vmail/mail/<domain>) stay reachable, read-only
    # except where ReadWritePaths allows.
    ProtectHome = if substring 0 6 paths.mailboxesDir == "/home/" then "read-only" else true;
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
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallErrorNumber = "EPERM";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "~@resources"
    ];
  };

  # Only the maildirs and unix sockets, no network at all.
  maildirsOnly = {
    PrivateNetwork = true;
    IPAddressDeny = "any";
    ReadWritePaths = [ paths.mailboxesDir ];
    RestrictAddressFamilies = [ "AF_UNIX" ];
  };

  # filtermail's milters: a unix socket in a directory that only vmail and Postfix's group enter
  # (modules/chatmaild.nix makes it; the socket itself is 0666). The outgoing one needs nothing
  # else; the incoming one asks DNS for DKIM keys, wherever the resolver is.
  milterSocket = socket: {
    ReadWritePaths = [ (dirOf socket) ];
  };
  unixOnly = {
    PrivateNetwork = true;
    IPAddressDeny = "any";
    RestrictAddressFamilies = [ "AF_UNIX" ];
  };
  # any address, e.g. a resolver or another relay, wherever it is
  resolverAccess = {
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
  };

  # chatmail-newemail and chatmail-mxdeliv incoming talk HTTP (to nginx) and SMTP (to Postfix)
  # on loopback only (AF_UNIX: an asyncio event loop wakes itself up through a socketpair).
  loopbackOnly = resolverAccess // {
    IPAddressDeny = "any";
    IPAddressAllow = "localhost";
  };

  # whether chatmail-metrics listens on loopback (then it may talk to localhost only)
  loopbackAddress = address: match "127\\..*|::1|localhost" address != null;

  # The same quoting as nixpkgs' lib.escapeShellArgs for what needs it; plain words stay bare.
  escapeArg = arg: if match "[A-Za-z0-9_./=:@%+,-]+" arg != null then arg else "'${replaceStrings [ "'" ] [ "'\\''" ] arg}'";

  daemon = argv: extra: hardening // {
    ExecStart = concatStringsSep " " (map escapeArg argv);
    Restart = "always";
    RestartSec = "2s";
  } // extra;

  # A socket directory only the vmail user and group (Dovecot's auth-worker, imap and lmtp
  # processes) can enter; the sockets in it are 0660.
  socketDirectory = socket: {
    RuntimeDirectory = baseNameOf (dirOf socket);
    RuntimeDirectoryMode = "0750";
  };

  services = {
    # Dovecot's passdb/userdb: creates an account on its first login.
    doveauth = {
      description = "chatmail account database for Dovecot (doveauth)";
      # /proc/loadavg and /proc/meminfo (the system limits for new accounts) are no process
      # files, which ProcSubset=pid would hide
      serviceConfig = daemon daemons.doveauth (
        maildirsOnly // socketDirectory paths.doveauthSocket // { ProcSubset = "all"; }
      );
    };
    # Postfix's milters: outgoing on submission, incoming on port 25.
    filtermail = {
      description = "chatmail filter for outgoing mail (filtermail)";
      serviceConfig = daemon daemons.filtermail (unixOnly // milterSocket paths.filtermailSocket);
    };
    filtermail-incoming = {
      description = "chatmail filter for incoming mail (filtermail)";
      serviceConfig = daemon daemons.filtermail-incoming (
        resolverAccess // milterSocket paths.filtermailIncomingSocket
      );
    };
    # IMAP METADATA for Dovecot (push tokens, in the maildirs) and the push notifications
    # themselves: HTTPS to the notification service, wherever it is.
    chatmail-metadata = {
      description = "chatmail push notifications (chatmail-metadata)";
      serviceConfig = daemon daemons.metadata (socketDirectory paths.metadataSocket // resolverAccess // {
        ReadWritePaths = [ paths.mailboxesDir ];
      });
    };
    # /new behind nginx: reads chatmail.ini (world-readable) and looks whether the nocreate
    # file exists, nothing of vmail's, so a throwaway user without the maildirs.
    chatmail-newemail = {
      description = "chatmail /new: credentials for new accounts (behind nginx)";
      # without User/Group: systemd would take the static vmail user over DynamicUser
      serviceConfig = removeAttrs (daemon newemail loopbackOnly) [ "User" "Group" ] // {
        DynamicUser = true;
        ProtectHome = true;
      };
    };
  }
  // (
    if daemons ? turn-credentials then
      {
        # TURN credentials for chatmail-metadata: only its socket, and the shared secret, which
        # systemd hands over as a credential (the file itself may be root's alone).
        chatmail-turn-credentials = {
          description = "chatmail TURN credentials for chatmail-metadata (chatmail-turn-credentials)";
          serviceConfig = daemon (map (
            arg: if arg == turn.secretFile then "%d/turn-secret" else arg
          ) daemons.turn-credentials) (socketDirectory turn.socket // {
            LoadCredential = [ "turn-secret:${turn.secretFile}" ];
            PrivateNetwork = true;
            IPAddressDeny = "any";
            RestrictAddressFamilies = [ "AF_UNIX" ];
          });
        };
      }
    else
      { }
  )
  // (
    if daemons ? metrics then
      {
        # The scrape endpoint: reads the journal (group systemd-journal, which PrivateUsers
        # would hide), serves HTTP on metrics.address and reads Dovecot's listener on loopback.
        # (tests/systemd runs it under a real systemd)
        chatmail-metrics = {
          description = "chatmail metrics for Prometheus (chatmail-metrics)";
          serviceConfig =
            removeAttrs (daemon daemons.metrics { }) [
              "User"
              "Group"
            ]
            // {
              DynamicUser = true;
              SupplementaryGroups = [ "systemd-journal" ];
              PrivateUsers = false;
              # journalctl reads the boot id (/proc/sys/kernel/random/boot_id), no process file;
              # and with any of these three, `journalctl --follow` as this dynamic user saw no
              # new entry (measured under systemd 252, tests/systemd)
              ProcSubset = "all";
              ProtectProc = "default";
              ProtectKernelTunables = false;
              ProtectControlGroups = false;
              ProtectHome = true;
              RestrictAddressFamilies = [
                "AF_UNIX"
                "AF_INET"
                "AF_INET6"
              ];
            }
            // (
              if loopbackAddress metrics.address then
                {
                  IPAddressDeny = "any";
                  IPAddressAllow = "localhost";
                }
              else
                { }
            );
        };
      }
    else
      { }
  )
  // optionalAttrs (daemons ? mxdeliv) {
    # /mxdeliv behind nginx: HTTP in, SMTP out to Postfix, both on loopback.
    chatmail-mxdeliv = {
      description = "chatmail relay-to-relay delivery over HTTPS, incoming (chatmail-mxdeliv)";
      serviceConfig = daemon daemons.mxdeliv loopbackOnly;
    };
  }
  // optionalAttrs (daemons ? mxdeliv-outgoing) {
    # Postfix's fallback relay: SMTP in on loopback, DNS and HTTPS out to any relay.
    chatmail-mxdeliv-outgoing = {
      description = "chatmail relay-to-relay delivery over HTTPS, outgoing (chatmail-mxdeliv)";
      serviceConfig = daemon daemons.mxdeliv-outgoing resolverAccess;
    };
  }
  // {
    # Deletes old messages and inactive accounts (settings delete_*_after).
    chatmail-expire = {
      description = "chatmail mailbox expiry";
      serviceConfig = hardening // maildirsOnly // {
        Type = "oneshot";
        ExecStart = concatStringsSep " " (map escapeArg jobs.expire);
        RestrictAddressFamilies = "none";
      };
    };
  };

  optionalAttrs = condition: attrs: if condition then attrs else { };

  unitValue = value: if isBool value then (if value then "yes" else "no") else toString value;
  # lists as repeated assignments, as nixpkgs writes them
  unitLines = config: concatMap (
    name:
    let
      value = config.${name};
    in
    if isList value then map (v: "${name}=${unitValue v}") value else [ "${name}=${unitValue value}" ]
  ) (attrNames config);

  unitText = service: ''
    [Unit]
    Description=${service.description}

    [Service]
    ${concatStringsSep "\n" (unitLines service.serviceConfig)}
  '';

in
mapAttrs (_: service: service // { text = unitText service; }) services
