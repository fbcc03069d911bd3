# render-discovery.nix — what makes a relay findable and its mail deliverable, builtins only:
# the nginx configuration (HTTPS site with autoconfig, MTA-STS, /new and the index page; port 80
# redirect and ACME challenge; ALPN multiplexing of port 443), the files nginx serves, and the
# OpenDKIM configuration. render.nix calls this and returns the result as its `discovery` field;
# its header documents the params (`discovery`, `paths.*` below). Facts from chatmail relay
# 1.9.0 (cmdeploy nginx/nginx.conf.j2, opendkim/opendkim.conf, postfix/master.cf.j2).
#
# INPUT  { domain, settings, params, program, realtime, mxdeliv } (program: name -> path of a
#        chatmaild program; realtime: render-realtime.nix's result — the iroh relay's locations
#        join the HTTPS site, and the pages say which realtime services run; mxdeliv: whether
#        chatmail-mxdeliv takes relay-to-relay mail over HTTPS)
#
# params.discovery (every field optional):
#   alpn            multiplex port 443 by TLS ALPN (nginx stream + ssl_preread): "imap" -> 993,
#                   "smtp" -> 465, anything else -> the HTTPS site on httpsPort      true
#   httpsPort       loopback port of the HTTPS site when alpn is on                   8443
#   newemailPort    loopback port of `chatmail-newemail --listen`                     3691
#   dkim            sign outgoing mail with OpenDKIM and require a valid DKIM signature of
#                   the From domain on incoming mail (filtermail)                    true
#   dkimSelector    DKIM selector (DNS name <selector>._domainkey.<domain>)           "opendkim"
#   selfSigned      the certificate is not publicly trusted (upstream: a domain starting with
#                   "_"): /new answers GET too, with a dclogin: URL accepting invalid
#                   certificates (chatmail-newemail --self-signed), rate-limited per client
#                   address (nginx limit_req, 2 r/s, burst 5, as upstream), and the index page
#                   fetches one for its link              (domain starts with "_")
#   nginxModulesDir directory of dynamic nginx modules; when set, the complete config loads
#                   ngx_stream_module.so from it (Debian); null = stream is built in  null
#   opendkimSettings  opendkim.conf keys merged over the rendered ones (e.g. Nameservers) { }
# params.paths (discovery fields; defaults = the NixOS layout):
#   wwwDir          the site's root, holding the `www` files             "/etc/chatmail/www"
#   acmeChallengeDir  HTTP-01 challenge root (security.acme webroot) "/var/lib/acme/acme-challenge"
#   dkimKeyDir      <selector>.private (generated on first start)    "/var/lib/opendkim/keys"
#   opendkimSocket  the milter socket Postfix connects to            "/run/opendkim/opendkim.sock"
#   nginxRunDir     pid and temporary files of the complete config   "/run/nginx"
#   nginxLogDir     access.log and error.log of the complete config  "/var/log/nginx"
#
# RESULT
#   paths       the effective discovery paths above
#   www         files to install under paths.wwwDir: relative path -> text
#               (index.html, privacy.html and info.html from the privacy_* and limit settings,
#               .well-known/autoconfig/mail/config-v1.1.xml, .well-known/mta-sts.txt; for a
#               self-signed relay also dclogin.js)
#               The site also passes /mxdeliv (relay-to-relay mail over HTTPS, upstream 1.10-1.12)
#               to chatmail-mxdeliv on settings.filtermail_http_port_incoming when mxdeliv is on.
#   qr          { file, content }: the index page shows wwwDir/<file>, a QR code (PNG) of
#               <content>, which the deployer makes (qrencode) at build time or start
#   nginx       servers   list of { name, serverNames, listen = [ { addr, port, ssl } ], default,
#                         root, locations = { "<location>" = "directives"; }, extraConfig } (the
#                         HTTP side, in the shape of services.nginx.virtualHosts; `default`: the
#                         default_server of its listen sockets)
#               httpConfig  the servers as nginx text (with ssl_certificate lines)
#               httpExtraConfig  http-level directives the servers need (the /new rate-limit
#                         zone of a self-signed relay; nixpkgs: services.nginx.appendHttpConfig)
#               streamConfig  the ALPN multiplexer ("" when alpn is off)
#               conf      a complete nginx.conf (pid, logs, temp paths under nginxRunDir/LogDir)
#   opendkim    selector, keyFile, socket, domains ("csl:<domain>"),
#               settings  opendkim.conf keys besides Domain/KeyFile/Selector/Socket (which
#                         nixpkgs' services.opendkim passes on the command line)
#               extraConf the settings as text; conf = complete opendkim.conf (all keys)
#   dkim        whether OpenDKIM signs (discovery.dkim); render.nix puts its socket into the
#               submission services' smtpd_milters and non_smtpd_milters
#   newemail    argv: chatmail-newemail INI --listen 127.0.0.1:<newemailPort> [--self-signed]
#   ports       { https = 443; http = 80; httpsInternal; newemail }
{
  domain,
  settings,
  params,
  program,
  realtime ? {
    turn.enable = false;
    irohRelay = {
      enable = false;
      locations = { };
    };
  },
  mxdeliv ? false,
}:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elemAt
    toString
    ;

  options = {
    alpn = true;
    httpsPort = 8443;
    newemailPort = 3691;
    dkim = true;
    dkimSelector = "opendkim";
    selfSigned = builtins.substring 0 1 domain == "_";
    nginxModulesDir = null;
    opendkimSettings = { };
  }
  // (params.discovery or { });

  given = params.paths or { };
  paths = {
    wwwDir = given.wwwDir or "/etc/chatmail/www";
    acmeChallengeDir = given.acmeChallengeDir or "/var/lib/acme/acme-challenge";
    dkimKeyDir = given.dkimKeyDir or "/var/lib/opendkim/keys";
    opendkimSocket = given.opendkimSocket or "/run/opendkim/opendkim.sock";
    nginxRunDir = given.nginxRunDir or "/run/nginx";
    nginxLogDir = given.nginxLogDir or "/var/log/nginx";
  };
  tlsCert = given.tlsCert or "/var/lib/chatmail-tls/cert.pem";
  tlsKey = given.tlsKey or "/var/lib/chatmail-tls/key.pem";
  configFile = given.configFile or "/etc/chatmail/chatmail.ini";
  ipv6 = !(settings.disable_ipv6 or false);

  # --- served files -------------------------------------------------------------------------

  # Byte for byte what chatmaild.autoconfig.render_autoconfig writes (tests/nix compares them):
  # IMAP servers before SMTP ones, port 443 last in each when ALPN multiplexing is on.
  mailServers =
    [
      [ "imap" 993 "SSL" ]
      [ "imap" 143 "STARTTLS" ]
    ]
    ++ (if options.alpn then [ [ "imap" 443 "SSL" ] ] else [ ])
    ++ [
      [ "smtp" 465 "SSL" ]
      [ "smtp" 587 "STARTTLS" ]
    ]
    ++ (if options.alpn then [ [ "smtp" 443 "SSL" ] ] else [ ]);

  serverXml =
    server:
    let
      protocol = elemAt server 0;
      tag = if protocol == "imap" then "incomingServer" else "outgoingServer";
    in
    ''
      <${tag} type="${protocol}">
        <hostname>${domain}</hostname>
        <port>${toString (elemAt server 1)}</port>
        <socketType>${elemAt server 2}</socketType>
        <authentication>password-cleartext</authentication>
        <username>%EMAILADDRESS%</username>
      </${tag}>
    '';

  indent =
    prefix: text:
    concatStringsSep "\n" (
      map (line: if line == "" then "" else prefix + line) (
        builtins.filter builtins.isString (builtins.split "\n" text)
      )
    );

  autoconfigXml = ''
    <?xml version="1.0" encoding="UTF-8"?>
    <clientConfig version="1.1">
      <emailProvider id="${domain}">
        <domain>${domain}</domain>
        <displayName>${domain} chatmail</displayName>
        <displayShortName>${domain}</displayShortName>
    ${indent "    " (concatStringsSep "" (map serverXml mailServers))}  </emailProvider>
    </clientConfig>
  '';

  # RFC 8461; the same text as chatmaild.autoconfig.render_mta_sts_policy.
  mtaStsPolicy = ''
    version: STSv1
    mode: enforce
    mx: ${domain}
    max_age: 2419200
  '';

  newAccountUrl = "dcaccount:https://${domain}/new";
  # upstream's QR text (upper case: QR's compact alphanumeric mode)
  qr = {
    file = "qr-chatmail-invite.png";
    content = "DCACCOUNT:https://${domain}/new";
  };

  # --- web pages ----------------------------------------------------------------------------

  escapeHtml = builtins.replaceStrings [ "&" "<" ">" "\"" ] [ "&amp;" "&lt;" "&gt;" "&quot;" ];
  # an operator-supplied value: escaped, line breaks kept; a visible gap when unset
  operatorText =
    key:
    let
      value = toString (settings.${key} or "");
    in
    if value == "" then
      "<em>(not given: settings.${key})</em>"
    else
      builtins.replaceStrings [ "\n" ] [ "<br>\n" ] (escapeHtml value);

  page = title: body: ''
    <!DOCTYPE html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>${title}</title>
    </head>
    <body>
    ${body}
    <p><a href="/">${domain}</a> · <a href="/info.html">More information</a> ·
    <a href="/privacy.html">Privacy policy</a></p>
    </body>
    </html>
  '';

  # Self-signed: Delta Chat cannot fetch credentials from https://<domain>/new itself (it checks
  # the certificate), so the page fetches them and offers the dclogin: URL that accepts it.
  accountLink =
    if options.selfSigned then
      ''
        <p><a id="dclogin-link" href="/new">Get a ${domain} chat profile</a>: open this link on a
        device with Delta Chat. Each visit of this page makes new credentials; the link
        configures Delta Chat to accept this relay's self-signed certificate.</p>
        <p><code id="dclogin-url"></code></p>
        <script src="/dclogin.js"></script>
      ''
    else
      ''
        <p><a href="${newAccountUrl}">Get a ${domain} chat profile</a>: open this link on a device
        with Delta Chat, or scan this code with Delta Chat:</p>
        <p><a href="${newAccountUrl}"><img src="/${qr.file}" alt="QR code of ${qr.content}"></a></p>
      '';

  dcloginJs = ''
    // Fetches fresh credentials from /new and shows their dclogin: URL (self-signed relays).
    fetch("/new", { method: "POST" })
      .then(function (response) { return response.json(); })
      .then(function (credentials) {
        document.getElementById("dclogin-link").href = credentials.dclogin_url;
        document.getElementById("dclogin-url").textContent = credentials.dclogin_url;
      });
  '';

  indexHtml = page "${domain} chatmail relay" ''
    <h1>${domain}</h1>
    <p>A chatmail relay for <a href="https://delta.chat">Delta Chat</a>: instant,
    interoperable and <a href="/privacy.html">privacy-preserving</a> messaging.</p>
    ${accountLink}
  '';

  # what each realtime service is (info page) and what it processes (privacy page)
  realtimeServices =
    (
      if realtime.turn.enable then
        [
          {
            what = "a TURN server (port 3478) that relays the media of calls between devices that cannot reach each other directly";
            processes = "Calls relayed by the TURN server: the Internet addresses of both devices, while the call lasts; the media itself stays end-to-end encrypted.";
          }
        ]
      else
        [ ]
    )
    ++ (
      if realtime.irohRelay.enable then
        [
          {
            what = "an iroh relay (https://${domain}/relay) that connects devices sharing realtime data of webxdc apps";
            processes = "Realtime data of webxdc apps passed through the iroh relay: the Internet addresses of the devices, while they are connected; the data itself stays end-to-end encrypted.";
          }
        ]
      else
        [ ]
    );
  listItems = field: concatStringsSep "" (map (service: "<li>${service.${field}}</li>\n") realtimeServices);
  realtimeList = listItems "what";

  infoHtml = page "${domain}: more information" ''
    <h1>More information about ${domain}</h1>
    <p>${domain} is a chatmail relay: an e-mail server for chats with
    <a href="https://delta.chat">Delta Chat</a>, with these limits:</p>
    <ul>
    <li>Messages leave this relay only end-to-end encrypted; set up contacts with QR invite
    codes.</li>
    <li>You may send up to ${toString settings.max_user_send_per_minute} messages per minute.</li>
    <li>Your messages on the server may take up to ${toString settings.max_mailbox_size}.</li>
    <li>Messages are removed from the server ${toString settings.delete_mails_after} days after
    they arrived, large ones (over 200 kB) after ${toString settings.delete_large_after} days.</li>
    <li>An address that does not log in for ${toString settings.delete_inactive_users_after}
    days is deleted with all its data; remove the profile from every device to have it deleted
    that way.</li>
    </ul>
    ${if realtimeServices == [ ] then "" else "<p>For calls and realtime apps it also runs:</p>\n<ul>\n${realtimeList}</ul>"}
    <p>Questions, and requests about your account: ${operatorText "privacy_mail"}</p>
  '';

  privacyHtml = page "Privacy policy of ${domain}" ''
    <h1>Privacy policy of ${domain}</h1>
    <h2>Summary: no personal data asked for or kept</h2>
    <p>This relay stores and delivers end-to-end encrypted messages between Delta Chat apps. It
    asks for no personal data: an address is made of random characters. It keeps no logs of
    Internet (IP) addresses and does not relate them to e-mail addresses. Messages are removed
    ${toString settings.delete_mails_after} days after they arrived at the latest; an address
    unused for ${toString settings.delete_inactive_users_after} days is deleted with all its
    data.</p>
    <h2>1. Who is responsible</h2>
    <p>${operatorText "privacy_postal"}</p>
    <p>E-mail: ${operatorText "privacy_mail"}</p>
    <p>Data protection officer:<br>${operatorText "privacy_pdo"}</p>
    <h2>2. What is processed, and why</h2>
    <ul>
    <li>Messages, for transmission: stored until delivered and until removed (see above). They
    are end-to-end encrypted; the relay refuses to send unencrypted messages elsewhere.</li>
    <li>Each address and a hash of its password, to let only its owner log in.</li>
    <li>The day of an address's last login, to delete unused addresses.</li>
    <li>Push notification tokens that an app registers, to wake it when a message arrives; they
    go to the notification service of the app's platform.</li>
    ${listItems "processes"}</ul>
    <p>The legal basis is the performance of the service you asked for (Art. 6 (1) (b) GDPR).
    Nothing is passed to third parties except as needed to deliver messages.</p>
    <h2>3. Your rights</h2>
    <p>You may ask for access to, correction and deletion of your data, restriction of and
    objection to its processing, and its transfer (Art. 15–21 GDPR), and complain to a
    supervisory authority; the one responsible for the operator is:<br>
    ${operatorText "privacy_supervisor"}</p>
  '';

  www = {
    "index.html" = indexHtml;
    "info.html" = infoHtml;
    "privacy.html" = privacyHtml;
    ".well-known/autoconfig/mail/config-v1.1.xml" = autoconfigXml;
    ".well-known/mta-sts.txt" = mtaStsPolicy;
  }
  // (if options.selfSigned then { "dclogin.js" = dcloginJs; } else { });

  # --- nginx --------------------------------------------------------------------------------

  listenAll =
    port: ssl:
    [
      {
        addr = "0.0.0.0";
        inherit port ssl;
      }
    ]
    ++ (
      if ipv6 then
        [
          {
            addr = "[::]";
            inherit port ssl;
          }
        ]
      else
        [ ]
    );

  httpsListen =
    if options.alpn then
      [
        {
          addr = "127.0.0.1";
          port = options.httpsPort;
          ssl = true;
        }
      ]
    else
      listenAll 443 true;

  # A self-signed relay hands out credentials on every GET (the index page's link): at most
  # 2 requests a second per client address, bursts of 5 (upstream's limit); nginx answers 503
  # beyond that.
  newemailProxy =
    (if options.selfSigned then "limit_req zone=chatmail_new burst=5 nodelay;\n" else "")
    + "proxy_pass http://127.0.0.1:${toString options.newemailPort};\n";
  httpExtraConfig =
    if options.selfSigned then "limit_req_zone $binary_remote_addr zone=chatmail_new:10m rate=2r/s;\n" else "";
  # Every HTTPS answer: browsers keep to HTTPS for the relay's name (gixy, which nixpkgs runs on
  # nginx.conf at build time, asks for it on every TLS server).
  hstsHeader = ''
    add_header Strict-Transport-Security "max-age=31536000" always;
  '';
  # "types { }": the extension's MIME type (nixpkgs includes mime.types) must not win
  xmlType = "types { }\ndefault_type application/xml;\n";
  textType = "types { }\ndefault_type text/plain;\n";

  servers = [
    {
      # Port 80: only the ACME challenge, everything else to HTTPS.
      name = "${domain}-http";
      serverNames = [
        domain
        "autoconfig.${domain}"
        "mta-sts.${domain}"
        "www.${domain}"
      ];
      listen = listenAll 80 false;
      default = true;
      root = null;
      locations = {
        "/.well-known/acme-challenge/" = "root ${paths.acmeChallengeDir};\n";
        "/" = "return 301 https://$host$request_uri;\n";
      };
      extraConfig = "";
    }
    {
      name = domain;
      serverNames = [
        domain
        "www.${domain}"
      ];
      listen = httpsListen;
      # one default_server per listen socket (the autoconfig and MTA-STS servers share it)
      default = true;
      root = paths.wwwDir;
      locations = {
        # nginx's static handler: index.html for /, 404 for what is not there
        "/" = "index index.html;\n";
        "= /.well-known/autoconfig/mail/config-v1.1.xml" = xmlType;
        "= /.well-known/mta-sts.txt" = textType;
        "= /${qr.file}" = "types { }\ndefault_type image/png;\n";
        "~ \\.html$" = "types { }\ndefault_type \"text/html; charset=utf-8\";\n";
        # chatmail-newemail answers GET with the dcaccount: redirect itself, POST with JSON.
        "= /new" = newemailProxy;
        # the URL of early printed QR codes
        "= /cgi-bin/newemail.py" = newemailProxy;
      }
      // realtime.irohRelay.locations
      // (
        if mxdeliv then
          {
            # Other relays POST mail here (upstream's route: "/mxdeliv" and below), at most
            # max_message_size bytes, which nginx buffers before passing it on; the answer to a
            # larger one is an SMTP reply too, so the sender bounces it instead of retrying.
            "/mxdeliv" = ''
              client_max_body_size ${toString settings.max_message_size};
              error_page 413 @mxdeliv-too-large;
              proxy_pass http://127.0.0.1:${toString settings.filtermail_http_port_incoming};
            '';
            "@mxdeliv-too-large" = textType + ''
              return 413 "552 5.3.4 Message size exceeds fixed limit\n";
            '';
          }
        else
          { }
      );
      extraConfig = hstsHeader;
    }
    {
      # Thunderbird's (and Delta Chat's) first try: https://autoconfig.<domain>/mail/config-v1.1.xml
      name = "autoconfig.${domain}";
      serverNames = [ "autoconfig.${domain}" ];
      listen = httpsListen;
      default = false;
      root = paths.wwwDir;
      locations = {
        "= /mail/config-v1.1.xml" =
          xmlType + "alias ${paths.wwwDir}/.well-known/autoconfig/mail/config-v1.1.xml;\n";
        "/" = "return 404;\n";
      };
      extraConfig = hstsHeader;
    }
    {
      name = "mta-sts.${domain}";
      serverNames = [ "mta-sts.${domain}" ];
      listen = httpsListen;
      default = false;
      root = paths.wwwDir;
      locations = {
        "= /.well-known/mta-sts.txt" = textType;
        "/" = "return 404;\n";
      };
      extraConfig = hstsHeader;
    }
  ];

  listenLine =
    server: l:
    "listen ${if l.addr == "0.0.0.0" then "" else "${l.addr}:"}${toString l.port}${
      if l.ssl then " ssl" else ""
    }${if server.default then " default_server" else ""};\n";

  serverText =
    server:
    let
      ssl = builtins.any (l: l.ssl) server.listen;
    in
    "server {\n"
    + indent "  " (
      concatStringsSep "" (map (listenLine server) server.listen)
      + "server_name ${concatStringsSep " " server.serverNames};\n"
      + (if server.root == null then "" else "root ${server.root};\n")
      + (if ssl then "ssl_certificate ${tlsCert};\nssl_certificate_key ${tlsKey};\n" else "")
      + concatStringsSep "" (
        map (
          location:
          "location ${location} {\n" + indent "  " server.locations.${location} + "}\n"
        ) (attrNames server.locations)
      )
      + server.extraConfig
    )
    + "}\n";

  httpConfig = concatStringsSep "" (map serverText servers);

  # The map picks a port, not an address: proxy_pass then names a literal IP, which needs no
  # resolver (gixy asks for one wherever proxy_pass takes a whole variable).
  streamConfig =
    if options.alpn then
      ''
        map $ssl_preread_alpn_protocols $chatmail_alpn_port {
          ~\bimap\b 993;
          ~\bsmtp\b 465;
          default ${toString options.httpsPort};
        }
        server {
          listen 443;
        ${if ipv6 then "  listen [::]:443;\n" else ""}  ssl_preread on;
          proxy_pass 127.0.0.1:$chatmail_alpn_port;
        }
      ''
    else
      "";

  nginxConf =
    (
      if options.nginxModulesDir == null || !options.alpn then
        ""
      else
        "load_module ${options.nginxModulesDir}/ngx_stream_module.so;\n"
    )
    + ''
      worker_processes auto;
      pid ${paths.nginxRunDir}/nginx.pid;
      error_log ${paths.nginxLogDir}/error.log;
      events {
      }
    ''
    + (if options.alpn then "stream {\n${indent "  " streamConfig}}\n" else "")
    + ''
      http {
        server_tokens off;
        default_type application/octet-stream;
        access_log ${paths.nginxLogDir}/access.log;
        client_body_temp_path ${paths.nginxRunDir}/client_body;
        proxy_temp_path ${paths.nginxRunDir}/proxy;
        fastcgi_temp_path ${paths.nginxRunDir}/fastcgi;
        uwsgi_temp_path ${paths.nginxRunDir}/uwsgi;
        scgi_temp_path ${paths.nginxRunDir}/scgi;
        ssl_protocols TLSv1.2 TLSv1.3;
        # nixpkgs' default services.nginx.sslCiphers (Mozilla's intermediate list)
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
      ${indent "  " (httpExtraConfig + httpConfig)}}
    '';

  # --- OpenDKIM -----------------------------------------------------------------------------

  selector = options.dkimSelector;
  keyFile = "${paths.dkimKeyDir}/${selector}.private";

  opendkimSettings = {
    # Sign only: incoming mail is verified by filtermail (From-domain alignment, which
    # OpenDKIM without Lua cannot check).
    Mode = "s";
    Canonicalization = "relaxed/simple";
    # Sign Autocrypt and Content-Type too; oversign the headers a forger would add a second
    # copy of (upstream's list).
    SignHeaders = "*,+autocrypt,+content-type";
    OversignHeaders = "from,reply-to,subject,date,to,cc,resent-date,resent-from,resent-sender,resent-to,resent-cc,in-reply-to,references,list-id,list-help,list-unsubscribe,list-subscribe,list-post,list-owner,list-archive,autocrypt";
    # Sign what Postfix's submission services and its own notices hand over (daemon name
    # ORIGINATING) and nothing else: no host is "internal" by its address (the default 127.0.0.1
    # would sign whatever a local client sends).
    MTA = "ORIGINATING";
    InternalHosts = "/dev/null";
    # Postfix (group opendkim) connects to the socket.
    UMask = "007";
  }
  // options.opendkimSettings;

  settingsText =
    attrs: concatStringsSep "" (map (k: "${k} ${toString attrs.${k}}\n") (attrNames attrs));

  opendkimConf = settingsText (
    opendkimSettings
    // {
      Domain = domain;
      Selector = selector;
      KeyFile = keyFile;
      Socket = "local:${paths.opendkimSocket}";
    }
  );

in
{
  inherit paths www qr;
  nginx = {
    inherit
      servers
      httpConfig
      httpExtraConfig
      streamConfig
      ;
    conf = nginxConf;
  };
  opendkim = {
    inherit selector keyFile;
    socket = paths.opendkimSocket;
    domains = "csl:${domain}";
    settings = opendkimSettings;
    extraConf = settingsText opendkimSettings;
    conf = opendkimConf;
  };
  inherit (options) dkim;
  newemail = [
    (program "chatmail-newemail")
    configFile
    "--listen"
    "127.0.0.1:${toString options.newemailPort}"
  ]
  ++ (if options.selfSigned then [ "--self-signed" ] else [ ]);
  ports = {
    https = 443;
    http = 80;
    httpsInternal = options.httpsPort;
    newemail = options.newemailPort;
  };
}
