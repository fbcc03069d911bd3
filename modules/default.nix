# services.chatmail: a chatmail relay (Delta Chat) from Postfix, Dovecot and chatmaild.
#
# This file holds the options and renders the configuration once (./render.nix, shared with
# the local test harness); the other files apply it, one concern each.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  submodule = options: types.submodule { inherit options; };
  # the app version index's fields, typed as Delta Chat core reads them
  field = type: example: description: mkOption { inherit type example description; };
  listOfFields =
    description: options:
    mkOption {
      type = types.listOf (submodule options);
      inherit description;
    };

  cfg = config.services.chatmail;
  render = import ./render.nix;
  defaults = (render { }).defaults;

  # One typed option per chatmail.ini key; defaults come from render.nix.
  setting = type: description: { inherit type description; };
  knownSettings = {
    max_user_send_per_minute = setting types.ints.positive "How many messages one address may send per minute; filtermail answers `450 4.7.1` beyond that.";
    max_user_send_burst_size = setting types.ints.positive "How many messages one address may send in a burst before the per-minute rate applies.";
    max_mailbox_size = setting size "Storage quota of one address (Dovecot quota rule), e.g. `500M`. When a delivery takes a mailbox over 75 % of it, the oldest messages older than a day are removed down to 70 % (also by the daily expiry), so the sender of the next message gets no bounce; a mailbox full of mail younger than a day refuses delivery (552).";
    max_message_size = setting types.ints.positive "Largest accepted message in bytes (Postfix `message_size_limit`, Dovecot `quota_max_mail_size`).";
    delete_mails_after = setting types.ints.positive "Days after which messages are deleted from mailboxes.";
    delete_large_after = setting types.ints.positive "Days after which large messages (over 200 kB) are deleted.";
    delete_inactive_users_after = setting types.ints.positive "Days without a login after which an address and its messages are deleted.";
    username_min_length = setting types.ints.positive "Shortest local part accepted for a new address.";
    username_max_length = setting types.ints.positive "Longest local part accepted for a new address.";
    password_min_length = setting types.ints.positive "Shortest password accepted for a new address.";
    filtermail_smtp_port = setting types.port "Loopback port of filtermail for outgoing mail in its SMTP mode (upstream's before-queue filter); this module runs filtermail as a milter on a unix socket and uses no such port.";
    postfix_reinject_port = setting types.port "Loopback port on which Postfix takes outgoing mail back from filtermail's SMTP mode (not used by this module).";
    filtermail_smtp_port_incoming = setting types.port "Loopback port of filtermail for incoming mail in its SMTP mode (not used by this module).";
    postfix_reinject_port_incoming = setting types.port "Loopback port on which Postfix takes incoming mail back from filtermail's SMTP mode (not used by this module).";
    filtermail_http_port_incoming = setting types.port "Loopback port of `chatmail-mxdeliv`, to which nginx passes `/mxdeliv` (relay-to-relay mail over HTTPS; upstream's key).";
    postfix_mxdeliv_port = setting types.port "Loopback port on which Postfix takes mail that arrived over HTTPS from `chatmail-mxdeliv`, with the checks of port 25.";
    mxdeliv_fallback_port = setting types.port "Loopback port of `chatmail-mxdeliv`'s SMTP side, Postfix's fallback relay for relays whose port 25 cannot be reached.";
    disable_ipv6 = setting types.bool "Whether Postfix and Dovecot listen on IPv4 only.";
    acme_email = setting types.str "Contact address given to the ACME CA when {option}`services.chatmail.tls.mode` is `\"acme\"` (empty: `security.acme.defaults.email`).";
    imap_rawlog = setting types.bool "Whether Dovecot writes each IMAP session to `.in`/`.out` files in the maildir (debugging only; nothing removes them).";
    imap_compress = setting types.bool "Whether IMAP COMPRESS is offered; it rules out hibernating idle IMAP clients, so it costs memory.";
    privacy_postal = setting types.lines "Postal address of the privacy contact (for the privacy policy).";
    privacy_mail = setting types.str "E-mail address of the privacy contact.";
    privacy_pdo = setting types.lines "Postal address of the data protection officer.";
    privacy_supervisor = setting types.lines "Postal address of the privacy supervisory authority.";
    max_load_1m = setting types.numbers.positive "Largest 1-minute load average (as `uptime` shows it; processes waiting for disk count too) at which new addresses are still created; above it `doveauth` refuses them (the login fails) and logs `registration rejected`, while existing addresses keep working.";
    min_available_memory = setting size "Least memory available without swapping (`MemAvailable`) at which new addresses are still created (see `max_load_1m`).";
    min_free_disk_space = setting size "Least free disk space on the file system of the mailboxes at which new addresses are still created (see `max_load_1m`).";
    max_imap_connections = setting types.ints.positive "Most concurrent logged-in IMAP sessions (Dovecot's imap `process_limit`); a login beyond it waits for a free process and fails when none becomes free.";
    max_smtp_connections = setting atLeastFive "Most concurrent SMTP sessions on each of the submission ports 587 and 465 (Postfix `maxproc`; further clients wait); one client address may hold a fifth of them, more get `421 4.7.0 Error: too many connections`.";
  };

  size = types.strMatching "[0-9]+([KMGTkmgt][Bb]?)?" // {
    description = "size such as 500M (K, M, G or T, powers of 1024; a bare number is megabytes)";
  };
  atLeastFive = types.addCheck types.int (n: n >= 5) // {
    description = "integer of at least 5";
  };

  # render.nix needs a domain. Without one, the assertion on services.chatmail.domain is what
  # the user should see, but other modules' assertions read rendered values (nginx's its virtual
  # hosts): they get this name, which no relay can have.
  domain = if cfg.domain != null then cfg.domain else "domain-not-set.invalid";

  # Keys that render.nix takes from other options, never from settings.
  derivedSettings = {
    mail_domain = "services.chatmail.domain";
    mailboxes_dir = "services.chatmail.mailboxesDir";
    turn_socket_path = "nothing: the module runs chatmail-turn-credentials at /run/chatmail-turn/turn.socket";
    mtail_address = "services.chatmail.metrics.address";
  };

  tlsFiles =
    {
      acme =
        let
          directory = config.security.acme.certs.${cfg.domain}.directory;
        in
        {
          cert = "${directory}/fullchain.pem";
          key = "${directory}/key.pem";
        };
      selfSigned = {
        cert = "/var/lib/chatmail-tls/cert.pem";
        key = "/var/lib/chatmail-tls/key.pem";
      };
      # toString keeps a path a path (no copy of the key into the world-readable store).
      manual = {
        cert = toString cfg.tls.certificateFile;
        key = toString cfg.tls.keyFile;
      };
    }
    .${cfg.tls.mode};

  params = {
    inherit domain;
    settings = removeAttrs cfg.settings (lib.attrNames derivedSettings);
    paths = {
      configFile = "/etc/chatmail/chatmail.ini";
      mailboxesDir = cfg.mailboxesDir;
      doveauthSocket = "/run/doveauth/doveauth.socket";
      filtermailSocket = "/run/filtermail/outgoing.sock";
      filtermailIncomingSocket = "/run/filtermail/incoming.sock";
      metadataSocket = "/run/chatmail-metadata/metadata.socket";
      pushNotificationLua = "/etc/dovecot/push_notification.lua";
      dovecotAuthDictConf = "/etc/dovecot/chatmail-auth-dict.conf";
      tlsCert = tlsFiles.cert;
      tlsKey = tlsFiles.key;
      caFile = config.security.pki.caBundle;
      # nixpkgs' Postfix module keeps its queue here (not configurable there).
      postfixQueueDir = "/var/lib/postfix/queue";
      postfixUser = config.services.postfix.user;
      postfixGroup = config.services.postfix.group;
      vmailUser = "vmail";
      vmailGroup = "vmail";
      binDir = "${cfg.package}/bin";
      turnSecretFile =
        if cfg.turn.staticAuthSecretFile == null then
          "/var/lib/chatmail-turn/static-auth-secret"
        else
          toString cfg.turn.staticAuthSecretFile;
    };
    # coturn and iroh-relay (render-realtime.nix; options in realtime.nix)
    turn = {
      inherit (cfg.turn) enable minPort maxPort;
    };
    irohRelay = {
      inherit (cfg.irohRelay) enable port;
    };
    inherit (cfg) pushNotificationUrl appVersions;
    metrics = {
      inherit (cfg.metrics)
        enable
        address
        port
        dovecotStatsPort
        ;
    };
    # nginx and OpenDKIM (render-discovery.nix; options in nginx.nix and dkim.nix)
    discovery = {
      alpn = cfg.nginx.alpnMultiplexing;
      inherit (cfg.nginx) httpsPort newemailPort;
      dkim = cfg.dkim.enable;
      dkimSelector = cfg.dkim.selector;
      # Delta Chat cannot check such a certificate: /new hands out dclogin: URLs that accept it
      selfSigned = cfg.tls.mode == "selfSigned" || lib.hasPrefix "_" (toString cfg.domain);
    };
    mxdeliv = { inherit (cfg.mxdeliv) enable fallback; };
    postfixMain = cfg.postfix.main;
    postfixMaster = cfg.postfix.master;
    dovecot = cfg.dovecot;
  };

  escapeHatch =
    what: example:
    mkOption {
      type = types.attrsOf types.anything;
      default = { };
      inherit example;
      description = ''
        Merged over the rendered ${what}: attribute sets merge key by key, other values replace,
        `null` removes a key. Prefer this to setting the same keys on the service's own module,
        which this module sets with ordinary (or, for master.cf entries, forced) priority.
      '';
    };
in
{
  imports = [
    ./postfix.nix
    ./dovecot.nix
    ./chatmaild.nix
    ./tls.nix
    ./firewall.nix
    ./nginx.nix
    ./dkim.nix
    ./realtime.nix
    ./journald.nix
    ./mxdeliv.nix
  ];

  options.services.chatmail = {
    enable = lib.mkEnableOption "the chatmail relay (Postfix, Dovecot and chatmaild for Delta Chat)";

    domain = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "chat.example.org";
      description = ''
        The mail domain; required. Addresses are `<name>@<domain>`, and the relay's host name
        (MX target, TLS certificate name, Postfix `myhostname`) is the same name.
        A lower-case DNS name of at least two labels; labels may start with `_`.
      '';
    };

    package = mkOption {
      type = types.package;
      default = pkgs.chatmaild or (pkgs.callPackage ../pkgs/chatmaild { });
      defaultText = lib.literalMD "`pkgs.chatmaild` (this flake's overlay), else built from `pkgs/chatmaild`";
      description = "The chatmaild package providing `doveauth` and `filtermail`.";
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = types.attrsOf (
          types.oneOf [
            types.bool
            types.int
            types.str
            (types.listOf types.str)
          ]
        );
        options = lib.mapAttrs (
          key: spec:
          mkOption {
            inherit (spec) type description;
            default = defaults.${key};
          }
        ) knownSettings;
      };
      default = { };
      example = {
        max_user_send_per_minute = 120;
        max_mailbox_size = "1G";
      };
      description = ''
        Values of `chatmail.ini` (section `[params]`, read by chatmaild), named as in upstream
        chatmail relay. Keys without an option here are written to the file as given.
      '';
    };

    mailboxesDir = mkOption {
      type = types.str;
      default = "/var/lib/vmail/mail/${domain}";
      defaultText = lib.literalExpression ''"/var/lib/vmail/mail/''${config.services.chatmail.domain}"'';
      description = "Directory of the maildirs, one per address (the ini's `mailboxes_dir`).";
    };

    pushNotificationUrl = mkOption {
      type = types.str;
      default = (render { }).defaultPushNotificationUrl;
      defaultText = lib.literalExpression ''"https://notifications.delta.chat/notify"'';
      example = "https://push.example.org/notify";
      description = ''
        Where `chatmail-metadata` POSTs a push notification (the device token a Delta Chat
        client stored with IMAP `SETMETADATA`, as the body) when a message arrives for that
        mailbox; failed requests are retried with back-off for up to 5 hours. The default is
        Delta Chat's notification service, as upstream chatmail relays use.
      '';
    };

    metrics = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether `chatmail-metrics` serves one Prometheus scrape endpoint,
          `http://<address>:<port>/metrics`: counters from the relay's log lines (in the journal)
          with upstream's mtail names (`delivered_mail`, `outgoing_encrypted_mail_count`,
          `rejected_unencrypted_mail_count`, `dkim_signed`, `created_accounts`,
          `rejected_registrations`, `quota_exceeded`, `quota_expire_removed_files`,
          `postfix_timeouts`, …) followed by Dovecot's own OpenMetrics (`dovecot_*`, from its stats
          service on loopback port {option}`services.chatmail.metrics.dovecotStatsPort`).
          The ini's `mtail_address` is this address.
        '';
      };
      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "10.0.0.5";
        description = ''
          Address the metrics endpoint listens on. Keep it on loopback or a private network (a
          VPN): the counters tell the relay's traffic, and the firewall is not opened for it.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 3903;
        description = "Port of the metrics endpoint (upstream's mtail port).";
      };
      dovecotStatsPort = mkOption {
        type = types.port;
        default = 3904;
        description = "Loopback port of Dovecot's OpenMetrics listener, read by `chatmail-metrics` (upstream's port).";
      };
    };

    logRetention = mkOption {
      type = types.nullOr (types.strMatching "[0-9]+(s|min|h|d|w)");
      default = "3d";
      example = "12h";
      description = ''
        How long the system journal keeps log lines, which name addresses and client IP
        addresses: kept in memory only (`Storage=volatile`) and at most this long
        (`MaxRetentionSec`), as upstream relays do for privacy. `null` leaves journald as it is
        configured elsewhere (`services.journald`).
      '';
    };

    appVersions = mkOption {
      type = types.nullOr (submodule {
        clients = listOfFields "One entry per app." {
          clientId = field types.nonEmptyStr "deltachat" "The app, as Delta Chat core names it.";
          sources = listOfFields "The sources of this app." {
            sourceId = field types.nonEmptyStr "gplay" "Where the app comes from (core takes the first matching source).";
            versionInteger = field types.ints.u32 754 "The version as the integer core compares.";
            versionString = field types.nonEmptyStr "2.57.0" "The version as shown to the user.";
            downloadUrl = field types.nonEmptyStr "https://example.org/app.apk" "Where the app downloads this version.";
          };
        };
      });
      default = null;
      description = ''
        The app version index `chatmail-metadata` serves as IMAP METADATA
        `/shared/vendor/deltachat/appversions` (one line of JSON), from which apps installed
        outside app stores learn about updates. `null`: the index shipped with chatmaild, as
        upstream relays serve it. The types are those Delta Chat core reads: core ignores the
        whole index when one value has another type.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to open the relay's ports: SMTP 25, submission 587 and 465, IMAP 143 and 993,
        HTTPS 443 and HTTP 80 for nginx ({option}`services.chatmail.nginx.enable`), HTTP 80
        for ACME challenges when {option}`services.chatmail.tls.mode` is `"acme"`, and for the
        TURN server ({option}`services.chatmail.turn.enable`) UDP and TCP 3478 and the UDP ports
        of relayed addresses (`turn.minPort`–`turn.maxPort`).
      '';
    };

    tls = {
      mode = mkOption {
        type = types.enum [
          "acme"
          "selfSigned"
          "manual"
        ];
        default = "acme";
        description = ''
          Where the TLS certificate for the domain comes from:
          `"acme"`: `security.acme` (HTTP-01 on port 80; set `security.acme.acceptTerms`);
          `"selfSigned"`: generated once into `/var/lib/chatmail-tls` (tests, private relays);
          `"manual"`: the files named by `certificateFile` and `keyFile`.
        '';
      };
      certificateFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/lib/secrets/chat.example.org/fullchain.pem";
        description = "PEM certificate chain for `tls.mode = \"manual\"`.";
      };
      keyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/lib/secrets/chat.example.org/key.pem";
        description = "PEM private key for `tls.mode = \"manual\"` (read by root only; keep it out of the Nix store).";
      };
    };

    postfix = {
      main = escapeHatch "Postfix main.cf settings" { smtpd_peername_lookup = null; };
      master = escapeHatch "Postfix master.cf services (entries as in {option}`services.postfix.settings.master`)" {
        submission.maxproc = 1000;
      };
    };

    dovecot = escapeHatch "Dovecot settings (as in {option}`services.dovecot2.settings`)" {
      "service imap-login".process_min_avail = 2;
    };

    dovecotWithoutNotifyDelay = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether Dovecot is built with this project's patch `pkgs/dovecot/no-notify-delay.patch`
        (as upstream chatmail relays run it): an IMAP IDLE client, i.e. every Delta Chat device
        waiting for messages, hears of a new message as soon as it is stored instead of a fixed
        500 ms later. `false`: nixpkgs' `dovecot_2_3` as it is. Either way with Lua (the push
        notification script needs it), which nixpkgs' binary cache does not have: the package is
        built on the machine (`nix build .#dovecot` builds the default one ahead). Ignored when
        {option}`services.dovecot2.package` is set.
      '';
    };

    rendered = mkOption {
      type = types.raw;
      internal = true;
      readOnly = true;
      default = render params;
      description = "The output of render.nix for this configuration (read by the other files).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.domain != null;
          message = ''services.chatmail.domain is not set; write e.g. services.chatmail.domain = "chat.example.org"; (the mail domain, also the relay's host name).'';
        }
      ]
      ++ lib.mapAttrsToList (key: option: {
        assertion = !(cfg.settings ? ${key});
        message = "services.chatmail.settings.${key} is not used; set ${option} instead.";
      }) derivedSettings
      ++ map (problem: {
        assertion = false;
        message = "services.chatmail: ${problem}.";
      }) (lib.optionals (cfg.domain != null) cfg.rendered.problems);
    warnings = map (warning: "services.chatmail: ${warning}.") (
      lib.optionals (cfg.domain != null) cfg.rendered.warnings
    );
  };
}
