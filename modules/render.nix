# render.nix — chatmail relay configuration as data and text, from builtins only.
#
# The NixOS module (modules/*.nix) and the local harness (tests/harness, scripts/local-relay)
# both render Postfix, Dovecot and chatmail.ini from this one function, so what the harness
# tests is what NixOS runs. No nixpkgs, no imports: it evaluates with a plain
#
#   nix-instantiate --eval --strict --json \
#     -E 'import ./modules/render.nix (builtins.fromJSON (builtins.readFile ./params.json))'
#
# (Nix 2.8 and later). Facts follow chatmail relay 1.9.0 (cmdeploy's postfix/main.cf.j2,
# master.cf.j2, dovecot/dovecot.conf.j2, dovecot/auth.conf, dovecot/push_notification.lua), and
# 1.10-1.12 where the network changed since (docs/upstream-compat.md).
#
# PARAMS (a plain attrset; everything JSON-able)
#   domain        required. The mail domain, a lower-case DNS name of at least two labels;
#                 labels may start with "_" (e.g. "_r1.test"). Used for myhostname, myorigin,
#                 virtual_mailbox_domains and the ini's mail_domain.
#   settings      chatmail.ini values, keyed by the upstream ini key. Missing keys take the
#                 defaults (result field `defaults`). Values: int, string, bool
#                 or list of strings (lists are written space-separated; strings with newlines
#                 as indented continuation lines). Unknown keys are
#                 written to the ini as they are. `mail_domain` and `mailboxes_dir` are not
#                 accepted here: they come from `domain` and `paths.mailboxesDir`.
#   paths         everything that differs between NixOS and the local harness; every field is
#                 optional (defaults = the NixOS layout):
#     configFile          chatmail.ini location              "/etc/chatmail/chatmail.ini"
#     mailboxesDir        maildirs, one per address          "/var/lib/vmail/mail/<domain>"
#     doveauthSocket      doveauth's dict socket             "/run/doveauth/doveauth.socket"
#     filtermailSocket, filtermailIncomingSocket  filtermail's milter sockets (submission, port
#                         25); their directory must let Postfix in
#                                                            "/run/filtermail/{outgoing,incoming}.sock"
#     metadataSocket      chatmail-metadata's dict socket (IMAP METADATA, push tokens)
#                                                            "/run/chatmail-metadata/metadata.socket"
#     pushNotificationLua where `pushNotificationLua` (Dovecot's LMTP push script) is installed
#                                                            "/etc/dovecot/push_notification.lua"
#     dovecotAuthDictConf where `dovecotAuthDictConf` (the passdb/userdb dict config) is
#                         installed; Dovecot's passdb/userdb `args` point to it
#                                                            "/etc/dovecot/chatmail-auth-dict.conf"
#     tlsCert, tlsKey     PEM certificate chain and key      "/var/lib/chatmail-tls/{cert,key}.pem"
#     caFile              CA bundle for verifying other relays (smtp_tls_CAfile)
#                                                            "/etc/ssl/certs/ca-certificates.crt"
#     postfixQueueDir     Postfix queue_directory; Dovecot puts its auth and LMTP sockets in
#                         its private/ ("private/auth", "private/dovecot-lmtp")
#                                                            "/var/lib/postfix/queue"
#     postfixUser, postfixGroup  owner of those sockets      "postfix", "postfix"
#     vmailUser, vmailGroup      owner of the maildirs; Dovecot's mail_uid/mail_gid, the
#                                LMTP and auth-worker user   "vmail", "vmail"
#     binDir              directory holding `doveauth` and `filtermail`; null = leave the bare
#                         program names for a PATH lookup     null
#     appVersionsFile     where `appVersionsJson` is installed   "/etc/chatmail/appversions.json"
#   pushNotificationUrl  where chatmail-metadata POSTs push notifications (chatmail-metadata
#                 --notify-url); default: upstream's public service (result `defaultPushNotificationUrl`).
#   mxdeliv       relay-to-relay delivery over HTTPS (chatmail-mxdeliv, upstream 1.10-1.12's
#                 /mxdeliv); every field optional:
#     enable      other relays may POST mail to https://<domain>/mxdeliv (nginx route, daemon
#                 `mxdeliv`, Postfix's loopback smtpd `mxdeliv` with port 25's checks)   true
#     fallback    mail for a relay whose port 25 cannot be reached goes to its /mxdeliv
#                 (Postfix smtp_fallback_relay -> daemon `mxdeliv-outgoing`)             true
#   appVersions   the app version index chatmail-metadata serves as IMAP METADATA
#                 /shared/vendor/deltachat/appversions ({ clients = [ { clientId; sources = [
#                 { sourceId; versionInteger; versionString; downloadUrl; } ]; } ]; }); null
#                 (default): the index shipped with chatmaild, as upstream serves it.
#   postfixMain, postfixMaster, dovecot
#                 escape hatches, merged recursively over the rendered `postfixMain`,
#                 `postfixMaster` and `dovecot` (attrsets merge key by key, any other value
#                 replaces, `null` removes the key). For other deployments, e.g. several
#                 instances on one host: queue_directory, data_directory, multi_instance_name,
#                 maillog_file (Postfix); base_dir, state_dir, instance_name, log_path (Dovecot).
#
# RESULT
#   defaults      chatmail.ini defaults (as chatmaild's reader has them) (readable without params:
#                 `(import ./render.nix { }).defaults`).
#   settings      the effective chatmail.ini values (defaults, then params.settings, then
#                 mail_domain and mailboxes_dir).
#   paths         the effective paths (defaults, then params.paths).
#   problems      list of human-readable configuration errors (bad domain, username lengths,
#                 port collisions, ports out of range); [] when fine. Rendering does not fail on
#                 them: the NixOS module turns them into assertions, the harness should check it.
#   postfixMain   main.cf as an attrset in the shape of nixpkgs' `services.postfix.settings.main`
#                 (values: string, int, bool, list of strings).
#   postfixMaster master.cf as an attrset of services in the shape of nixpkgs'
#                 `services.postfix.settings.master` entries: name (defaults to the key), type,
#                 private, privileged, chroot, wakeup, wakeupUnusedComponent, maxproc, command,
#                 args. Fields left out mean the Postfix default ("-"). Keys follow nixpkgs
#                 (e.g. `smtp_inet` is the smtpd on port 25, `smtp` the client), and the
#                 standard services carry nixpkgs' own values.
#   mainCf, masterCf  the same as file text (lists joined with ", ", bools yes/no).
#   dovecot       dovecot.conf (2.3) as a settings tree in the shape of nixpkgs'
#                 `services.dovecot2.settings`: "name" = value; a section is an attrset under
#                 the key "type name" (e.g. "service imap"); lists of strings (top level only,
#                 as nixpkgs' type allows) are written space-separated, bools yes/no.
#   dovecotConf   the same as dovecot.conf text (keys in sorted order, as nixpkgs writes them).
#   dovecotAuthDictConf  text of the dict passdb/userdb config (to install at
#                 paths.dovecotAuthDictConf): proxy to doveauth, keys passdb/… and userdb/….
#   pushNotificationLua  text of the LMTP push-notification script (to install at
#                 paths.pushNotificationLua): on a new message for someone other than its sender,
#                 it sets /private/messagenew on the mailbox, which chatmail-metadata answers by
#                 notifying every device token of the mailbox.
#   defaultPushNotificationUrl  upstream's notification service (readable without params).
#   appVersionsJson  params.appVersions as JSON text, to install at paths.appVersionsFile; null
#                 when params.appVersions is null (chatmail-metadata then gets no --appversions).
#   chatmailIni   chatmail.ini text: a `[params]` section with every key of `settings`, readable
#                 by chatmaild.config.read_config.
#   daemons       argv lists of the chatmaild daemons (upstream command lines):
#                 doveauth            = [ doveauth SOCKET INI ]
#                 filtermail          = [ filtermail INI outgoing-milter SOCKET ]
#                 filtermail-incoming = [ filtermail INI incoming-milter SOCKET [--skip-dkim] ]
#                 (the milter mode; --skip-dkim when params.discovery.dkim is false)
#                 metadata            = [ chatmail-metadata SOCKET INI --notify-url URL
#                                         [--appversions paths.appVersionsFile] ]
#                 turn-credentials    = [ chatmail-turn-credentials SOCKET --secret-file F … ]
#                                       (only when params.turn.enable, the default)
#   realtime      TURN (coturn settings and turnserver.conf, the chatmail-turn-credentials argv)
#                 and the iroh relay (config, argv, nginx locations): see render-realtime.nix,
#                 which documents params.turn, params.irohRelay and their paths. chatmail.ini's
#                 turn_socket_path is paths.turnSocket (not accepted in settings), its iroh_relay
#                 https://<domain> when the iroh relay is served, else empty, unless
#                 settings.iroh_relay names one.
#                 mxdeliv             = [ chatmail-mxdeliv INI incoming ]  (mxdeliv.enable)
#                 mxdeliv-outgoing    = [ chatmail-mxdeliv INI outgoing --ca-file CA ]
#                                                                    (mxdeliv.fallback)
#   discovery     nginx (HTTPS site: autoconfig, MTA-STS, /new, index; port 80; ALPN on 443),
#                 the files it serves, OpenDKIM, the chatmail-newemail argv: see
#                 render-discovery.nix, which also documents params.discovery and its paths.
#                 OpenDKIM's socket is in the submission services' smtpd_milters and in
#                 non_smtpd_milters (bounces, notices) when params.discovery.dkim is on.
#   systemdUnits  the systemd services of the daemons, chatmail-newemail (run by the module only
#                 with nginx) and the expire job (render-systemd.nix):
#                 name -> { description; serviceConfig; text (the unit file) }.
#   jobs          argv lists of periodic jobs: expire = [ chatmail-expire INI --remove ]
#                 (upstream runs it daily; it deletes by the settings delete_*_after, using the
#                 last-login day that Dovecot's last_login plugin stores through doveauth).
#   ports         { public = { smtp, submission, submissions, imap, imaps }; internal = the
#                 four filter/reinject ports of chatmail.ini (filtermail's SMTP mode; master.cf
#                 has none: filtermail is a milter on paths.filtermailSocket and
#                 paths.filtermailIncomingSocket) } for firewalls and checks.
params:
let
  inherit (builtins)
    all
    attrNames
    concatMap
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    fromJSON
    isAttrs
    isBool
    isInt
    isList
    isString
    length
    listToAttrs
    match
    removeAttrs
    split
    stringLength
    toString
    ;

  # --- helpers -------------------------------------------------------------------------------

  yesNo = b: if b then "yes" else "no";

  # Merge `override` over `base`: attrsets recursively, other values replace, null removes.
  mergeOver =
    base: override:
    foldl' (
      acc: name:
      let
        value = override.${name};
      in
      if value == null then
        removeAttrs acc [ name ]
      else if isAttrs value && isAttrs (acc.${name} or null) then
        acc // { ${name} = mergeOver acc.${name} value; }
      else
        acc // { ${name} = dropNulls value; }
    ) base (attrNames override);

  # An override value that lands on a missing key must not carry its null "removals" along.
  dropNulls =
    value:
    if isAttrs value then
      listToAttrs (
        map (name: {
          inherit name;
          value = dropNulls value.${name};
        }) (filter (name: value.${name} != null) (attrNames value))
      )
    else
      value;

  lines = text: filter isString (split "\n" text);

  # --- inputs --------------------------------------------------------------------------------

  # chatmail.ini defaults, as chatmaild's config reader has them (upstream 1.9.0's keys;
  # max_mailbox_size and max_user_send_burst_size follow this project's chatmaild).
  defaults = {
    max_user_send_per_minute = 60;
    max_user_send_burst_size = 10;
    max_mailbox_size = "500M";
    max_message_size = 31457280;
    delete_mails_after = 20;
    delete_large_after = 7;
    delete_inactive_users_after = 90;
    username_min_length = 9;
    username_max_length = 9;
    password_min_length = 9;
    filtermail_smtp_port = 10080;
    postfix_reinject_port = 10025;
    filtermail_smtp_port_incoming = 10081;
    postfix_reinject_port_incoming = 10026;
    filtermail_http_port_incoming = 10082;
    postfix_mxdeliv_port = 10027;
    mxdeliv_fallback_port = 10084;
    disable_ipv6 = false;
    acme_email = "";
    imap_rawlog = false;
    imap_compress = false;
    privacy_postal = "";
    privacy_mail = "";
    privacy_pdo = "";
    privacy_supervisor = "";
    # system limits (upstream 1.12): doveauth creates no account above this load or below this
    # memory or disk space; the connection limits go into Dovecot's and Postfix's configuration
    max_load_1m = 5;
    min_available_memory = "200M";
    min_free_disk_space = "1G";
    max_imap_connections = 10000;
    max_smtp_connections = 1000;
  };

  domain =
    if params ? domain && isString params.domain then
      params.domain
    else
      throw "render.nix: params.domain (the mail domain, a string) is required";

  givenSettings = params.settings or { };

  # The metrics endpoint (chatmail-metrics) and Dovecot's OpenMetrics listener behind it; ports as
  # upstream's mtail (3903) and Dovecot stats (3904).
  metrics = {
    enable = false;
    address = "127.0.0.1";
    port = 3903;
    dovecotStatsPort = 3904;
  }
  // (params.metrics or { });

  defaultPushNotificationUrl = "https://notifications.delta.chat/notify";
  pushNotificationUrl = params.pushNotificationUrl or defaultPushNotificationUrl;
  appVersions = params.appVersions or null;
  mxdeliv = {
    enable = true;
    fallback = true;
  }
  // (params.mxdeliv or { });
  mxdelivFallback = mxdeliv.fallback;
  appVersionsJson = if appVersions == null then null else builtins.toJSON appVersions;

  paths = {
    configFile = "/etc/chatmail/chatmail.ini";
    mailboxesDir = "/var/lib/vmail/mail/${domain}";
    doveauthSocket = "/run/doveauth/doveauth.socket";
    filtermailSocket = "/run/filtermail/outgoing.sock";
    filtermailIncomingSocket = "/run/filtermail/incoming.sock";
    metadataSocket = "/run/chatmail-metadata/metadata.socket";
    pushNotificationLua = "/etc/dovecot/push_notification.lua";
    dovecotAuthDictConf = "/etc/dovecot/chatmail-auth-dict.conf";
    tlsCert = "/var/lib/chatmail-tls/cert.pem";
    tlsKey = "/var/lib/chatmail-tls/key.pem";
    caFile = "/etc/ssl/certs/ca-certificates.crt";
    postfixQueueDir = "/var/lib/postfix/queue";
    postfixUser = "postfix";
    postfixGroup = "postfix";
    vmailUser = "vmail";
    vmailGroup = "vmail";
    binDir = null;
    logFiles = null;
    appVersionsFile = "/etc/chatmail/appversions.json";
  }
  // (params.paths or { });

  settings =
    if givenSettings ? mail_domain then
      throw "render.nix: settings.mail_domain is not accepted; it is params.domain"
    else if givenSettings ? mailboxes_dir then
      throw "render.nix: settings.mailboxes_dir is not accepted; set paths.mailboxesDir instead"
    else if givenSettings ? turn_socket_path then
      throw "render.nix: settings.turn_socket_path is not accepted; set paths.turnSocket instead"
    else if givenSettings ? mtail_address then
      throw "render.nix: settings.mtail_address is not accepted; it is metrics.address (when metrics.enable)"
    else
      defaults
      # advertised only when served (an explicit settings.iroh_relay names another relay)
      // { iroh_relay = realtime.irohRelay.url; }
      // givenSettings
      // {
        mail_domain = domain;
        mailboxes_dir = paths.mailboxesDir;
        turn_socket_path = realtime.paths.turnSocket;
      }
      # upstream's key for where its metrics (mtail) listen; unset = none
      // (if metrics.enable then { mtail_address = metrics.address; } else { });

  # A size as chatmaild reads it (config.size_bytes, upstream 1.12): K/M/G/T are powers of 1024,
  # an optional B may follow, a bare number is megabytes; null if it is no size.
  sizeUnits = rec {
    K = 1024;
    M = 1024 * K;
    G = 1024 * M;
    T = 1024 * G;
    k = K;
    m = M;
    g = G;
    t = T;
  };
  sizeBytes =
    size:
    let
      parts = match "0*([0-9]+)(([KMGTkmgt])[Bb]?)?" (toString size);
    in
    if parts == null then
      null
    else
      fromJSON (elemAt parts 0) * (if elemAt parts 2 == null then sizeUnits.M else sizeUnits.${elemAt parts 2});
  sizeKeys = [
    "max_mailbox_size"
    "min_available_memory"
    "min_free_disk_space"
  ];
  # Kibibytes, as Dovecot takes them ("512000K"); 0 for a malformed size (reported in problems).
  kibibytes = bytes: "${toString (bytes / 1024)}K";
  mailboxBytes =
    let
      bytes = sizeBytes settings.max_mailbox_size;
    in
    if bytes == null then 0 else bytes;

  # Quota that makes room (upstream 1.10): a delivery that takes a mailbox over the trigger runs
  # chatmail-quota-expire, which removes the oldest mail older than a day down to the target.
  # Delta Chat warns its users at 80 % and 95 %, so both stay below.
  quotaTriggerPercent = 75;
  quotaTargetPercent = 70;

  # --- validation ----------------------------------------------------------------------------

  # A DNS name: lower-case labels of letters, digits, "_" and inner "-" (chatmaild accepts no
  # upper case), at most 63 characters each, at least two labels, at most 253 characters.
  domainLabels = filter isString (split "\\." domain);
  labelOk = label: match "[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?" label != null;
  domainOk =
    stringLength domain <= 253 && length domainLabels >= 2 && all labelOk domainLabels;

  publicPorts = {
    smtp = 25;
    submission = 587;
    submissions = 465;
    imap = 143;
    imaps = 993;
  };
  internalPortKeys = [
    "filtermail_smtp_port"
    "postfix_reinject_port"
    "filtermail_smtp_port_incoming"
    "postfix_reinject_port_incoming"
    "filtermail_http_port_incoming"
    "postfix_mxdeliv_port"
    "mxdeliv_fallback_port"
  ];
  internalPorts = listToAttrs (
    map (key: {
      name = key;
      value = settings.${key};
    }) internalPortKeys
  );
  portUsers =
    map (key: {
      name = key;
      port = settings.${key};
    }) internalPortKeys
    ++ map (name: {
      name = "the ${name} listener";
      port = publicPorts.${name};
    }) (attrNames publicPorts);
  portProblems = concatMap (
    key:
    let
      port = settings.${key};
      sharers = filter (u: u.port == port && u.name != key) portUsers;
    in
    if !(isInt port) || port < 1 || port > 65535 then
      [ "settings.${key} = ${toString port} is not a TCP port; write a number from 1 to 65535" ]
    else if sharers != [ ] then
      [
        "settings.${key} = ${toString port} collides with ${(builtins.head sharers).name}; give each of ${concatStringsSep ", " internalPortKeys} its own free port"
      ]
    else
      [ ]
  ) internalPortKeys;

  problems =
    (
      if domainOk then
        [ ]
      else
        [
          "domain \"${domain}\" is not a DNS name of at least two labels (lower-case letters, digits, \"_\" and inner \"-\"); write e.g. \"chat.example.org\""
        ]
    )
    ++ (
      if settings.username_min_length <= settings.username_max_length then
        [ ]
      else
        [
          "username_min_length (${toString settings.username_min_length}) is greater than username_max_length (${toString settings.username_max_length}); make username_max_length at least ${toString settings.username_min_length}"
        ]
    )
    ++ portProblems
    ++ concatMap (
      key:
      if givenSettings ? ${key} then
        [
          "settings.${key} is no longer supported: upstream chatmail relay 1.11 removed passthrough senders and recipients, so that unencrypted mail never passes; remove the setting"
        ]
      else
        [ ]
    ) [ "passthrough_senders" "passthrough_recipients" ]
    ++ concatMap (
      key:
      if sizeBytes settings.${key} == null then
        [ "settings.${key} = \"${toString settings.${key}}\" is not a size; write e.g. \"500M\" (K, M, G or T; a bare number is megabytes)" ]
      else
        [ ]
    ) sizeKeys
    ++ (
      if isInt settings.max_smtp_connections && settings.max_smtp_connections >= 5 then
        [ ]
      else
        [
          "settings.max_smtp_connections = ${toString settings.max_smtp_connections} is too small: one client may use a fifth of it, which must be at least 1; write 5 or more"
        ]
    )
    ++ metricsPortProblems;

  # Things that work but likely not as meant (the module shows them as warnings).
  warnings =
    if mailboxBytes > 0 && settings.max_message_size > mailboxBytes * (100 - quotaTriggerPercent) / 100 then
      [
        "settings.max_message_size (${toString settings.max_message_size} bytes) is more than the ${toString (100 - quotaTriggerPercent)} % of max_mailbox_size (${toString settings.max_mailbox_size}) that quota expiry keeps free: a message that size can fill a mailbox before old mail is removed, and its sender gets a bounce; raise max_mailbox_size to at least ${toString (settings.max_message_size * 100 / (100 - quotaTriggerPercent) / 1048576 + 1)}M or lower max_message_size"
      ]
    else
      [ ];

  metricsPorts = [
    metrics.port
    metrics.dovecotStatsPort
  ];
  metricsPortProblems =
    if !metrics.enable then
      [ ]
    else if metrics.port == metrics.dovecotStatsPort then
      [ "metrics.port and metrics.dovecotStatsPort are both ${toString metrics.port}; give each its own port" ]
    else
      concatMap (
        port:
        if elem port (map (u: u.port) portUsers) then
          [ "metrics port ${toString port} collides with a mail port; choose another" ]
        else
          [ ]
      ) metricsPorts;

  # --- Postfix -------------------------------------------------------------------------------

  # Milters on unix sockets: on TCP loopback every mail waits for a delayed ACK (~40 ms).
  milterSocket = path: "unix:${path}";
  # OpenDKIM signs on submission and what Postfix writes itself (bounces, notices).
  dkimMilters = if discovery.dkim then [ (milterSocket discovery.opendkim.socket) ] else [ ];

  # Exceptions to "verify", keyed by next hop, first match wins (upstream 1.10-1.12's
  # smtp_tls_policy_map): TLS without certificate checks for IP literals ("[192.0.2.1]", IP-only
  # relays) and for domains starting with "_" (test relays; no public CA signs such names), both
  # with self-signed certificates upstream; nauta.cu has no STARTTLS at all. The fallback relay
  # (chatmail-mxdeliv outgoing, loopback) speaks plain SMTP. "$$" is a "$" after main.cf's own
  # expansion.
  fallbackRelay = "[127.0.0.1]:${toString settings.mxdeliv_fallback_port}";
  smtpTlsPolicy =
    "regexp:{"
    + (
      if mxdelivFallback then
        "{/^\\[127\\.0\\.0\\.1\\]:${toString settings.mxdeliv_fallback_port}$$/ none}, "
      else
        ""
    )
    + "{/^\\[[^]]+\\]$$/ encrypt}, {/^_/ encrypt}, {/^nauta\\.cu$$/ may}}";

  # Every check of mail from other relays, on port 25's smtpd and on the loopback smtpd that
  # takes mail from /mxdeliv: filtermail's incoming milter (encryption, DKIM), and the cleanup
  # that drops Received headers.
  relayChecks = {
    smtpd_milters = milterSocket paths.filtermailIncomingSocket;
    cleanup_service_name = "incomingclean";
  };

  renderedMain = {
    myhostname = domain;
    myorigin = domain;
    mydestination = "";
    virtual_mailbox_domains = domain;
    virtual_transport = "lmtp:unix:private/dovecot-lmtp";
    queue_directory = paths.postfixQueueDir;
    compatibility_level = "3.6";
    smtpd_banner = "$myhostname ESMTP $mail_name";
    biff = false;
    append_dot_mydomain = false;

    mynetworks = [
      "127.0.0.0/8"
      "[::ffff:127.0.0.0]/104"
      "[::1]/128"
    ];
    inet_interfaces = "all";
    inet_protocols = if settings.disable_ipv6 then "ipv4" else "all";
    mailbox_size_limit = 0;
    message_size_limit = settings.max_message_size;
    recipient_delimiter = "+";
    # Give up on a message after 2 days, bounces included (upstream 1.12: what is not delivered
    # within 2 days is unlikely to be in 5; qmgr would cut bounce_queue_lifetime's default of
    # 5d down to this anyway, with a warning).
    maximal_queue_lifetime = "2d";
    bounce_queue_lifetime = "2d";
    # Header checks see the message's own headers only, never header-like lines of MIME parts in
    # the body (upstream 1.12): nothing in the body is rewritten, so DKIM body hashes hold.
    disable_mime_input_processing = true;
    # No reverse lookups of clients: fewer delays and DNS queries.
    smtpd_peername_lookup = false;

    # Milters (filtermail, OpenDKIM; master.cf names them per smtpd): one that is down or does
    # not answer makes Postfix defer (451 4.7.1), never pass a mail unchecked.
    milter_default_action = "tempfail";
    # filtermail answers at once (its DKIM key lookups give up after 20 s): a milter that hangs
    # makes Postfix defer after these, not after Postfix's defaults of 30 s and 300 s
    milter_connect_timeout = "10s";
    milter_command_timeout = "10s";
    milter_content_timeout = "60s";
    # DKIM-sign mail that Postfix generates itself (bounces, postmaster notices; upstream
    # 1.11), which bypasses smtpd: OpenDKIM signs what comes with the daemon name ORIGINATING.
    milter_macro_daemon_name = "ORIGINATING";
    non_smtpd_milters = dkimMilters;
    internal_mail_filter_classes = if discovery.dkim then [ "bounce" "notify" ] else [ ];
    # What the recipient's copy must not show (upstream 1.10+): trace headers with the addresses
    # of clients and relays, and the DKIM headers of the way here.
    lmtp_header_checks = "regexp:{{/^Received:/ IGNORE}, {/^DKIM-Signature:/ IGNORE}, {/^Authentication-Results:/ IGNORE}}";
    smtpd_relay_restrictions = [
      "permit_mynetworks"
      "permit_sasl_authenticated"
      "defer_unauth_destination"
    ];

    # Server TLS; port 25 raises the level to "encrypt" in master.cf.
    smtpd_tls_chain_files = [
      paths.tlsKey
      paths.tlsCert
    ];
    smtpd_tls_security_level = "may";
    smtpd_tls_exclude_ciphers = [
      "aNULL"
      "RC4"
      "MD5"
      "DES"
    ];
    tls_preempt_cipherlist = true;

    # Client TLS to other relays: verified, SNI sent, whatever the relay's own certificate.
    smtp_tls_security_level = "verify";
    smtp_tls_CAfile = paths.caFile;
    smtp_tls_servername = "hostname";
    smtp_tls_policy_maps = smtpTlsPolicy;
    smtp_tls_protocols = ">=TLSv1.2";
    smtp_tls_mandatory_protocols = ">=TLSv1.2";
    # Relay-to-relay delivery reuses open connections, TLS included (through tlsproxy in
    # master.cf): a message to a relay that got one shortly before skips TCP, STARTTLS and the
    # TLS handshake. Every destination is cached, not only those with a backlog (Postfix's
    # on-demand default): chat mail comes one message at a time. The limits are Postfix's
    # defaults, spelled out: an idle connection is closed after 2 s (holding one open holds an
    # smtpd process of the other relay), and none is used for more than 300 s. No client-side
    # TLS session cache (smtp_tls_session_cache_database, upstream's btree): resuming a cached
    # session stalled every new connection by ~40 ms (TLS Finished and EHLO written separately,
    # then a delayed ACK), a full handshake does not. Trade-offs: docs/instant-delivery.md.
    smtp_tls_connection_reuse = true;
    smtp_connection_cache_destinations = "static:all";
    smtp_connection_cache_time_limit = "2s";
    connection_cache_ttl_limit = "2s";
    smtp_connection_reuse_time_limit = "300s";

    # Restrictions for authenticated clients (submission, submissions), referenced from
    # master.cf.
    mua_client_restrictions = [
      "permit_sasl_authenticated"
      "reject"
    ];
    mua_sender_restrictions = [
      "reject_sender_login_mismatch"
      "permit_sasl_authenticated"
      "reject"
    ];
    mua_helo_restrictions = [
      "permit_mynetworks"
      "reject_invalid_helo_hostname"
      "reject_non_fqdn_helo_hostname"
      "permit"
    ];
    # Every MAIL FROM address is owned by the SASL login of the same name. "$$" is a literal
    # "$" after main.cf's own expansion.
    smtpd_sender_login_maps = "regexp:{{/^(.*)$$/ $${1}}}";
    # Header cleanup of mail from other relays (the "incomingclean" cleanup service).
    incoming_header_checks = "regexp:{{/^Received:/ IGNORE}}";
    # Header cleanup of authenticated mail (the "authclean" cleanup service): no client IP,
    # no mailer, and no readable Subject.
    mua_header_checks = "regexp:{{/^Received:/ IGNORE}, {/^X-Originating-IP:/ IGNORE}, {/^X-Mailer:/ IGNORE}, {/^User-Agent:/ IGNORE}, {/^Subject:/ REPLACE Subject: [...]}}";
  };

  opts = attrs: concatMap (name: [ "-o" "${name}=${attrs.${name}}" ]) (attrNames attrs);

  submissionOpts = {
    smtpd_tls_security_level = "encrypt";
    smtpd_tls_mandatory_protocols = ">=TLSv1.3";
    smtpd_sasl_auth_enable = "yes";
    smtpd_sasl_type = "dovecot";
    smtpd_sasl_path = "private/auth";
    smtpd_reject_unlisted_recipient = "no";
    smtpd_client_restrictions = "$mua_client_restrictions";
    smtpd_helo_restrictions = "$mua_helo_restrictions";
    smtpd_sender_restrictions = "$mua_sender_restrictions";
    smtpd_recipient_restrictions = "";
    smtpd_relay_restrictions = "permit_sasl_authenticated,reject";
    milter_macro_daemon_name = "ORIGINATING";
    # max_smtp_connections per port (maxproc below), a fifth of it per client address (upstream
    # 1.12): a client over it gets "421 4.7.0 Error: too many connections"
    smtpd_client_connection_count_limit = toString (settings.max_smtp_connections / 5);
    # the header cleanup below, before the milters see the mail
    cleanup_service_name = "authclean";
    # filtermail checks, then OpenDKIM signs what it let through
    smtpd_milters = concatStringsSep "," ([ (milterSocket paths.filtermailSocket) ] ++ dkimMilters);
  };

  # Ports 587 and 465 differ only in how TLS starts.
  submissionService = name: tlsArgs: {
    type = "inet";
    private = false;
    maxproc = settings.max_smtp_connections;
    command = "smtpd";
    args = opts (submissionOpts // { syslog_name = "postfix/${name}"; } // tlsArgs);
  };

  # nixpkgs' standard services, with nixpkgs' values (modules/postfix.nix forces every entry
  # of this attrset, so it must be complete), then the chatmail services.
  renderedMaster = {
    pickup = {
      private = false;
      wakeup = 60;
      maxproc = 1;
    };
    cleanup = {
      private = false;
      maxproc = 0;
    };
    qmgr = {
      private = false;
      wakeup = 300;
      maxproc = 1;
    };
    tlsmgr = {
      wakeup = 1000;
      wakeupUnusedComponent = false;
      maxproc = 1;
    };
    rewrite.command = "trivial-rewrite";
    bounce.maxproc = 0;
    defer = {
      maxproc = 0;
      command = "bounce";
    };
    trace = {
      maxproc = 0;
      command = "bounce";
    };
    verify.maxproc = 1;
    flush = {
      private = false;
      wakeup = 1000;
      wakeupUnusedComponent = false;
      maxproc = 0;
    };
    proxymap = { };
    proxywrite = {
      maxproc = 1;
      command = "proxymap";
    };
    showq.private = false;
    error = { };
    retry.command = "error";
    discard = { };
    local.privileged = true;
    virtual.privileged = true;
    lmtp = { };
    anvil.maxproc = 1;
    scache.maxproc = 1;
    # TLS of the reused relay-to-relay connections (smtp_tls_connection_reuse).
    tlsproxy.maxproc = 0;
    smtp = { };
    relay = {
      command = "smtp";
      args = [
        "-o"
        "smtp_fallback_relay="
      ];
    };
    # Needed by maillog_file (logging without syslog).
    postlog = {
      type = "unix-dgram";
      private = false;
      chroot = false;
      maxproc = 1;
      command = "postlogd";
    };

    # Port 25: other relays, TLS required, every message through filtermail (incoming).
    smtp_inet = {
      name = "smtp";
      type = "inet";
      private = false;
      command = "smtpd";
      args = opts (
        relayChecks
        // {
          smtpd_tls_security_level = "encrypt";
          smtpd_tls_mandatory_protocols = ">=TLSv1.2";
        }
      );
    };
    # Ports 587 (STARTTLS) and 465 (TLS from the start): Delta Chat clients, SASL through
    # Dovecot, every message through filtermail (outgoing).
    submission = submissionService "submission" { smtpd_tls_auth_only = "yes"; };
    submissions = submissionService "submissions" { smtpd_tls_wrappermode = "yes"; };
    authclean = {
      private = false;
      maxproc = 0;
      command = "cleanup";
      args = opts { header_checks = "$mua_header_checks"; };
    };
    # Mail from other relays keeps no Received header, Postfix's own included (it names the
    # sending relay's address), so neither the delivered copy nor a bounce quoting the mail
    # shows one. Only top-level headers: a header inside an attached message is part of the
    # signed body. Milters (filtermail's DKIM check) see the mail after this; senders do not
    # sign Received headers (RFC 6376 5.4: SHOULD NOT).
    incomingclean = {
      private = false;
      maxproc = 0;
      command = "cleanup";
      args = opts {
        header_checks = "$incoming_header_checks";
        mime_header_checks = "";
        nested_header_checks = "";
      };
    };
  };

  postfixMain = mergeOver (
    renderedMain
    // (
      if metrics.enable then
        {
          # OpenDKIM logs only to syslog; Postfix logs the signature header it adds (an "info:"
          # line), which chatmail-metrics counts as dkim_signed wherever Postfix logs.
          milter_header_checks = "regexp:{{/^DKIM-Signature:/ INFO}}";
        }
      else
        { }
    )
    // (
      if mxdelivFallback then
        {
          # A relay whose port 25 cannot be reached (blocked, refused, no answer) gets the
          # message over HTTPS instead: chatmail-mxdeliv outgoing POSTs it to its /mxdeliv.
          smtp_fallback_relay = fallbackRelay;
        }
      else
        { }
    )
  ) (params.postfixMain or { });
  postfixMaster = mergeOver (
    renderedMaster
    // (
      if mxdeliv.enable then
        {
          # Mail that arrived over HTTPS (chatmail-mxdeliv incoming): port 25's checks, on
          # loopback without TLS. Its client is 127.0.0.1, inside mynetworks: only this
          # relay's own domain may be a recipient.
          mxdeliv = {
            name = "127.0.0.1:${toString settings.postfix_mxdeliv_port}";
            type = "inet";
            private = false;
            chroot = false;
            maxproc = 100;
            command = "smtpd";
            args = opts (
              relayChecks
              // {
                syslog_name = "postfix/mxdeliv";
                smtpd_relay_restrictions = "reject_unauth_destination";
              }
            );
          };
        }
      else
        { }
    )
  ) (params.postfixMaster or { });

  postfixValue =
    value:
    if isBool value then
      yesNo value
    else if isList value then
      concatStringsSep ", " value
    else
      toString value;

  mainCf = concatStringsSep "" (
    map (name: "${name} = ${postfixValue postfixMain.${name}}\n") (attrNames postfixMain)
  );

  masterLine =
    key:
    let
      entry = postfixMaster.${key};
      column = field: render: if entry ? ${field} then render entry.${field} else "-";
      wakeup =
        if entry ? wakeup then
          toString entry.wakeup + (if (entry.wakeupUnusedComponent or true) then "" else "?")
        else
          "-";
      args = concatStringsSep "" (
        map (arg: if match "-.*" arg != null then "\n  ${arg}" else " ${arg}") (entry.args or [ ])
      );
    in
    concatStringsSep " " [
      (entry.name or key)
      (entry.type or "unix")
      (column "private" (b: if b then "y" else "n"))
      (column "privileged" (b: if b then "n" else "y"))
      (column "chroot" (b: if b then "y" else "n"))
      wakeup
      (column "maxproc" toString)
      (entry.command or key)
    ]
    + args
    + "\n";

  masterCf =
    "# service type private unpriv chroot wakeup maxproc command + args\n"
    + concatStringsSep "" (map masterLine (attrNames postfixMaster));

  # --- Dovecot -------------------------------------------------------------------------------

  queuePrivate = "${paths.postfixQueueDir}/private";

  renderedDovecot = {
    protocols = [
      "imap"
      "lmtp"
    ];
    # a list: the newest nixpkgs module types it `(attrsOf bool) or (listOf str)`
    auth_mechanisms = [ "plain" ];
    disable_plaintext_auth = true;
    # Enough client slots for the process limits below (avoids doveconf's warnings).
    default_client_limit = 20000;
    # XDELTAPUSH: Delta Chat clients register push tokens (SETMETADATA) only where it is offered.
    imap_capability = "+XDELTAPUSH XCHATMAIL";
    # IMAP METADATA (push device tokens) lives in chatmail-metadata, for IMAP and for LMTP's
    # push script alike.
    mail_attribute_dict = "proxy:${paths.metadataSocket}:metadata";

    mail_uid = paths.vmailUser;
    mail_gid = paths.vmailGroup;
    mail_privileged_group = paths.vmailGroup;
    mail_location = "maildir:${paths.mailboxesDir}/%u";
    # Index and cache files are of little use to a relay; keep them small.
    mail_cache_max_size = "500K";
    mail_plugins = "zlib quota";

    passdb = {
      driver = "dict";
      args = paths.dovecotAuthDictConf;
    };
    userdb = {
      driver = "dict";
      args = paths.dovecotAuthDictConf;
    };

    "namespace inbox" = {
      inbox = true;
      "mailbox Drafts".special_use = "\\Drafts";
      "mailbox Junk".special_use = "\\Junk";
      "mailbox Trash".special_use = "\\Trash";
      "mailbox Sent".special_use = "\\Sent";
    };

    "protocol imap" =
      {
        mail_plugins = concatStringsSep " " (
          [
            "$mail_plugins"
            "imap_quota"
            "last_login"
          ]
          ++ (if settings.imap_compress then [ "imap_zlib" ] else [ ])
        );
        imap_metadata = true;
        # Without fsync (upstream 1.10): a crash may lose flag changes, and the disk (SSD)
        # is written less.
        mail_fsync = "never";
      }
      // (
        if settings.imap_rawlog then
          {
            # .in/.out protocol logs in each maildir.
            rawlog_dir = "%h";
          }
        else
          { }
      );

    # No Received header of its own on the delivered copy (upstream 1.10+; Postfix's are removed
    # by lmtp_header_checks).
    lmtp_add_received_header = false;
    "protocol lmtp" = {
      # Push notifications: on delivery, the Lua script (pushNotificationLua) sets metadata.
      mail_plugins = "$mail_plugins mail_lua notify push_notification push_notification_lua";
      # Without fsync (upstream 1.10): a crash right after a delivery may lose that message,
      # which Delta Chat resends as it does for any lost message; much of what LMTP writes
      # (new/ -> cur/ -> deleted soon after) never needs to reach the disk.
      mail_fsync = "never";
    };

    plugin = {
      push_notification_driver = "lua:file=${paths.pushNotificationLua}";
      zlib_save = "gz";
      imap_compress_deflate_level = 6;
      quota = "maildir:User quota";
      quota_rule = "*:storage=${kibibytes mailboxBytes}";
      # "%%": plugin settings are expanded per user; the script gets the target and the maildir.
      quota_warning = "storage=${toString quotaTriggerPercent}%% quota-warning ${kibibytes (mailboxBytes * quotaTargetPercent / 100)} ${paths.mailboxesDir}/%u";
      quota_max_mail_size = settings.max_message_size;
      quota_grace = 0;
      # A mailbox full of mail younger than a day (nothing the quota-warning script may remove)
      # refuses delivery permanently (LMTP 552, quota_full_tempfail = no as upstream): Postfix
      # bounces the message and this text reaches the sender.
      quota_exceeded_message = "Quota exceeded: the mailbox of the recipient is full (limit ${toString settings.max_mailbox_size})";
      # doveauth keeps the day of each address's last login (chatmail-expire reads it).
      last_login_dict = "proxy:${paths.doveauthSocket}:lastlogin";
      last_login_precision = "s";
    };

    "service lmtp" = {
      user = paths.vmailUser;
      "unix_listener ${queuePrivate}/dovecot-lmtp" = {
        user = paths.postfixUser;
        group = paths.postfixGroup;
        mode = "0600";
      };
    };
    "service auth" = {
      # Dovecot's default, written out: the dict passdb needs no privileges (upstream runs it
      # so too), and one older nixpkgs module sets root here.
      user = "$default_internal_user";
      "unix_listener ${queuePrivate}/auth" = {
        user = paths.postfixUser;
        group = paths.postfixGroup;
        mode = "0660";
      };
    };
    # doveauth's socket belongs to vmail; dict lookups run in auth-worker.
    "service auth-worker".user = paths.vmailUser;
    # The quota_warning script (chatmail-quota-expire), as the owner of the maildirs.
    "service quota-warning" = {
      executable = "script ${program "chatmail-quota-expire"}";
      user = paths.vmailUser;
      "unix_listener quota-warning" = {
        user = paths.vmailUser;
        mode = "0600";
      };
    };
    # Thousands of logged-in clients: one imap process each, long-lived login processes.
    # One imap process per logged-in client (max_imap_connections, upstream 1.12): beyond it,
    # a login waits for a free process and fails when none becomes free.
    "service imap" =
      {
        process_limit = settings.max_imap_connections;
      }
      // (
        if settings.imap_rawlog then
          { executable = "imap postlogin"; }
        else
          { }
      )
      // (
        if settings.imap_compress then
          { }
        else
          {
            # Lets imap-hibernate hand idle clients back (hibernation needs no COMPRESS).
            "unix_listener imap-master".user = "$default_internal_user";
            extra_groups = "$default_internal_group";
          }
      );
    "service imap-login" = {
      service_count = 0;
      vsz_limit = "1G";
      process_min_avail = 10;
    };
    # Penalties by IP address do not help here (clients come through NAT in numbers).
    "service anvil"."unix_listener anvil-auth-penalty".mode = "0";

    ssl = "required";
    ssl_cert = "<${paths.tlsCert}";
    ssl_key = "<${paths.tlsKey}";
    ssl_min_protocol = "TLSv1.3";
    ssl_prefer_server_ciphers = true;
  }
  // (
    if settings.disable_ipv6 then { listen = "*"; } else { }
  )
  // (
    # The admin contact clients read as IMAP METADATA /shared/admin (RFC 5464): the operator's
    # privacy contact, as upstream 1.12 does; no /shared/comment.
    if settings.privacy_mail == "" then
      { }
    else
      { mail_server_admin = "mailto:${settings.privacy_mail}"; }
  )
  // (
    if settings.imap_rawlog then
      {
        "service postlogin" = {
          executable = "script-login -d rawlog";
          "unix_listener postlogin" = { };
        };
      }
    else
      { }
  )
  // (
    if settings.imap_compress then
      { }
    else
      {
        imap_hibernate_timeout = "30s";
        "service imap-hibernate"."unix_listener imap-hibernate" = {
          mode = "0660";
          group = "$default_internal_group";
        };
      }
  );

  # Dovecot's own OpenMetrics (stats service), on loopback for chatmail-metrics to pass on.
  dovecotMetrics =
    let
      metric = filter: groupBy: { inherit filter; } // (if groupBy == null then { } else { group_by = groupBy; });
    in
    {
      "service stats"."inet_listener http" = {
        address = "127.0.0.1";
        port = metrics.dovecotStatsPort;
      };
      "metric auth_requests" = metric "event=auth_request_finished" "success";
      "metric mail_deliveries" = metric "event=mail_delivery_finished" null;
      "metric mail_delivery_failures" = metric "event=mail_delivery_finished AND error=*" null;
      "metric imap_commands" = metric "event=imap_command_finished" "cmd_name tagged_reply_state";
      "metric imap_hibernations" = metric "event=imap_client_hibernated" null;
      "metric imap_unhibernations" = metric "event=imap_client_unhibernated" "reason";
    };

  dovecot = mergeOver (renderedDovecot // (if metrics.enable then dovecotMetrics else { })) (
    params.dovecot or { }
  );

  dovecotValue =
    value:
    if isBool value then
      yesNo value
    else if isList value then
      concatStringsSep " " value
    else
      toString value;

  dovecotBlock =
    indent: tree:
    concatStringsSep "" (
      map (
        name:
        let
          value = tree.${name};
        in
        if isAttrs value then
          "${indent}${name} {\n" + dovecotBlock "${indent}  " value + "${indent}}\n"
        else
          "${indent}${name} = ${dovecotValue value}\n"
      ) (attrNames tree)
    );

  dovecotConf = dovecotBlock "" dovecot;

  dovecotAuthDictConf = ''
    uri = proxy:${paths.doveauthSocket}:auth
    iterate_disable = no
    iterate_prefix = userdb/
    default_pass_scheme = plain
    # %E escapes quotes and backslashes; the double quote separates the parts of the key.
    password_key = passdb/%Ew"%Eu
    user_key = userdb/%Eu
  '';

  # Dovecot's push_notification Lua driver calls these functions (names fixed by Dovecot 2.3):
  # the context is the recipient's mail user; a message is "new" for push purposes unless the
  # recipient sent it to itself (another device of the same account already knows it).
  pushNotificationLua = ''
    -- chatmail push notifications (rendered by modules/render.nix)
    function dovecot_lua_notify_begin_txn(user)
      return user
    end

    function dovecot_lua_notify_event_message_new(user, event)
      if event.from_address == user.username then
        return
      end
      local mailbox = user:mailbox(event.mailbox)
      mailbox:sync()
      -- chatmail-metadata notifies every device token of this mailbox.
      mailbox:metadata_set("/private/messagenew", "1")
      mailbox:free()
    end

    function dovecot_lua_notify_end_txn(user, success)
    end
  '';

  # --- chatmail.ini --------------------------------------------------------------------------

  iniValue =
    value:
    if isBool value then
      (if value then "true" else "false")
    else if isList value then
      concatStringsSep " " value
    else
      toString value;

  iniLine =
    name:
    let
      valueLines = lines (iniValue settings.${name});
    in
    if length valueLines > 1 then
      "${name} =\n" + concatStringsSep "" (map (l: "    ${l}\n") valueLines)
    else
      "${name} = ${iniValue settings.${name}}\n";

  chatmailIni = "[params]\n" + concatStringsSep "" (map iniLine (attrNames settings));

  # --- daemons -------------------------------------------------------------------------------

  program = name: if paths.binDir == null then name else "${paths.binDir}/${name}";

  # TURN (coturn and its credentials daemon) and the iroh relay; documented in that file.
  realtime = import ./render-realtime.nix { inherit domain params program; };

  # nginx (autoconfig, MTA-STS, /new, ALPN on 443) and OpenDKIM; documented in that file.
  discovery = import ./render-discovery.nix {
    inherit
      domain
      settings
      params
      program
      ;
    inherit realtime;
    mxdeliv = mxdeliv.enable;
  };

  # Periodic jobs (upstream: chatmail-expire daily at 00:02).
  jobs.expire = [
    (program "chatmail-expire")
    paths.configFile
    "--remove"
  ];

  daemons = {
    doveauth = [
      (program "doveauth")
      paths.doveauthSocket
      paths.configFile
    ];
    # the milter mode (filtermail.py); the SMTP mode `filtermail INI outgoing|incoming` is
    # upstream's before-queue filter with its re-injection ports, not used here
    filtermail = [
      (program "filtermail")
      paths.configFile
      "outgoing-milter"
      paths.filtermailSocket
    ];
    filtermail-incoming = [
      (program "filtermail")
      paths.configFile
      "incoming-milter"
      paths.filtermailIncomingSocket
    ]
    # without DKIM (discovery.dkim = false) nobody publishes keys to check against
    ++ (if discovery.dkim then [ ] else [ "--skip-dkim" ]);
    metadata = [
      (program "chatmail-metadata")
      paths.metadataSocket
      paths.configFile
      "--notify-url"
      pushNotificationUrl
    ]
    ++ (
      if appVersions == null then
        [ ]
      else
        [
          "--appversions"
          paths.appVersionsFile
        ]
    );
  }
  // (if realtime.turn.enable then { turn-credentials = realtime.turn.credentials; } else { })
  // (
    if metrics.enable then
      {
        metrics = [
          (program "chatmail-metrics")
          paths.configFile
          "--address"
          metrics.address
          "--port"
          (toString metrics.port)
          "--dovecot-stats"
          "http://127.0.0.1:${toString metrics.dovecotStatsPort}/metrics"
        ]
        ++ (if paths.logFiles == null then [ "--journal" ] else concatMap (file: [ "--log" file ]) paths.logFiles);
      }
    else
      { }
  )
  // (
    if mxdeliv.enable then
      {
        mxdeliv = [
          (program "chatmail-mxdeliv")
          paths.configFile
          "incoming"
        ];
      }
    else
      { }
  )
  // (
    if mxdelivFallback then
      {
        mxdeliv-outgoing = [
          (program "chatmail-mxdeliv")
          paths.configFile
          "outgoing"
          "--ca-file"
          paths.caFile
        ];
      }
    else
      { }
  );

  # systemd services of the daemons and jobs (serviceConfig for the module, unit text for
  # `systemd-analyze security --offline`)
  systemdUnits = import ./render-systemd.nix {
    inherit
      paths
      daemons
      jobs
      metrics
      ;
    inherit (discovery) newemail;
    turn = {
      socket = realtime.paths.turnSocket;
      secretFile = realtime.paths.turnSecretFile;
    };
  };
in
{
  inherit
    defaults
    settings
    paths
    problems
    warnings
    metrics
    postfixMain
    postfixMaster
    mainCf
    masterCf
    dovecot
    dovecotConf
    dovecotAuthDictConf
    pushNotificationLua
    defaultPushNotificationUrl
    appVersionsJson
    chatmailIni
    daemons
    jobs
    discovery
    realtime
    systemdUnits
    ;
  ports = {
    public = publicPorts;
    internal = internalPorts;
  };
}
