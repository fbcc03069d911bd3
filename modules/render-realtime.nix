# render-realtime.nix — calls and realtime (webxdc) for Delta Chat, builtins only: the TURN server
# (coturn) with time-limited REST-API credentials from a shared secret, the credentials daemon
# chatmail-metadata asks, and the iroh relay behind nginx. render.nix calls this and returns the
# result as its `realtime` field. Facts from chatmail relay 1.12 (chatmaild/metadata.py: `turn`
# metadata is "<mail_domain>:3478:<username>:<password>", read from the unix socket
# `turn_socket_path`; cmdeploy iroh-relay.toml and nginx.conf.j2: iroh-relay on port 3340 behind
# /relay, /ping and /generate_204).
#
# INPUT  { domain, params, program }
#
# params.turn (every field optional):
#   enable          run a TURN server on port 3478 and hand out credentials        true
#   minPort, maxPort  UDP ports of relayed addresses (coturn min-port/max-port) 49152, 65535
#   allowedPeers    address ranges ("A-B" or one address) relayed to although they are in
#                   deniedPeers, e.g. a private network of your own                    [ ]
#   lifetime        seconds a credential stays valid (upstream: five days)         432000
# params.irohRelay (every field optional):
#   enable          this relay serves an iroh relay (iroh-relay on loopback behind nginx);
#                   chatmail.ini's iroh_relay then names https://<domain>, else it is empty
#                   (metadata advertises none)                                      false
#   port            loopback port of iroh-relay's HTTP server                        3340
# params.paths (realtime fields; defaults = the NixOS layout):
#   turnSocket      chatmail-turn-credentials' socket (chatmail.ini turn_socket_path)
#                                                        "/run/chatmail-turn/turn.socket"
#   turnSecretFile  the shared secret, first line (the NixOS module generates it once)
#                                                        "/var/lib/chatmail-turn/static-auth-secret"
#   irohRelayConfig where `irohRelay.toml` is installed  "/etc/chatmail/iroh-relay.toml"
#
# RESULT
#   turn        enable, port (3478), minPort, maxPort, lifetime
#               coturn   values for nixpkgs' services.coturn options (realm, listening-port,
#                        min-port, max-port, use-auth-secret, no-tls, …, extraConfig)
#               conf     the same as a complete turnserver.conf whose secret line is
#                        "static-auth-secret=#static-auth-secret#", the placeholder nixpkgs'
#                        coturn unit replaces with the first line of the secret file
#               credentials  argv: chatmail-turn-credentials SOCKET --secret-file FILE --lifetime N
#   irohRelay   enable, port, url ("" when not served)
#               toml       iroh-relay's config file (to install at paths.irohRelayConfig)
#               argv       iroh-relay --config-path FILE (program name, for the harness)
#               locations  nginx locations of the HTTPS site ({ } when not served)
#   paths       the effective realtime paths above
{
  domain,
  params,
  program,
}:
let
  inherit (builtins) concatStringsSep toString;

  turnOptions = {
    enable = true;
    minPort = 49152;
    maxPort = 65535;
    allowedPeers = [ ];
    lifetime = 5 * 24 * 3600;
  }
  // (params.turn or { });

  irohOptions = {
    enable = false;
    port = 3340;
  }
  // (params.irohRelay or { });

  given = params.paths or { };
  paths = {
    turnSocket = given.turnSocket or "/run/chatmail-turn/turn.socket";
    turnSecretFile = given.turnSecretFile or "/var/lib/chatmail-turn/static-auth-secret";
    irohRelayConfig = given.irohRelayConfig or "/etc/chatmail/iroh-relay.toml";
  };

  # --- TURN ---------------------------------------------------------------------------------

  turnPort = 3478; # upstream's metadata always names this port

  # A credential lets every account holder relay traffic from this machine: never to loopback,
  # private, link-local or reserved addresses (coturn's recommended list), so TURN cannot reach
  # the relay's own loopback services (which may trust 127.0.0.1, as Postfix's mynetworks does).
  deniedPeers = [
    "0.0.0.0-0.255.255.255"
    "10.0.0.0-10.255.255.255"
    "100.64.0.0-100.127.255.255"
    "127.0.0.0-127.255.255.255"
    "169.254.0.0-169.254.255.255"
    "172.16.0.0-172.31.255.255"
    "192.0.0.0-192.0.0.255"
    "192.0.2.0-192.0.2.255"
    "192.88.99.0-192.88.99.255"
    "192.168.0.0-192.168.255.255"
    "198.18.0.0-198.19.255.255"
    "198.51.100.0-198.51.100.255"
    "203.0.113.0-203.0.113.255"
    "224.0.0.0-255.255.255.255"
    "::1"
    "64:ff9b::-64:ff9b::ffff:ffff"
    "::ffff:0.0.0.0-::ffff:255.255.255.255"
    "100::-100::ffff:ffff:ffff:ffff"
    "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
  ];

  # coturn settings that nixpkgs' services.coturn has no option for
  turnExtraLines =
    [
      # STUN/TURN messages carry a FINGERPRINT; no version string in replies
      "fingerprint"
      "no-software-attribute"
      "no-multicast-peers"
      "stale-nonce=600"
    ]
    ++ map (range: "denied-peer-ip=${range}") deniedPeers
    ++ map (range: "allowed-peer-ip=${range}") turnOptions.allowedPeers;

  # Values for nixpkgs' services.coturn: UDP and TCP on 3478, relayed addresses over UDP only
  # (what WebRTC uses; TCP relay allocations would be a way out to TCP services), no TLS
  # listener (calls are end-to-end encrypted; upstream's TURN server has none either), no CLI.
  coturn = {
    realm = domain;
    listening-port = turnPort;
    min-port = turnOptions.minPort;
    max-port = turnOptions.maxPort;
    use-auth-secret = true;
    no-tls = true;
    no-dtls = true;
    no-tcp-relay = true;
    no-cli = true;
    extraConfig = concatStringsSep "\n" turnExtraLines + "\n";
  };

  turnConf = ''
    listening-port=${toString turnPort}
    min-port=${toString turnOptions.minPort}
    max-port=${toString turnOptions.maxPort}
    realm=${domain}
    use-auth-secret
    static-auth-secret=#static-auth-secret#
    no-tls
    no-dtls
    no-tcp-relay
    no-cli
  ''
  + coturn.extraConfig;

  credentialsArgv = [
    (program "chatmail-turn-credentials")
    paths.turnSocket
    "--secret-file"
    paths.turnSecretFile
    "--lifetime"
    (toString turnOptions.lifetime)
  ];

  # --- iroh relay ---------------------------------------------------------------------------

  irohRelayUrl = if irohOptions.enable then "https://${domain}" else "";
  irohUpstream = "http://127.0.0.1:${toString irohOptions.port}";

  # iroh-relay speaks plain HTTP on loopback; nginx terminates TLS. enable_stun is 0.35's key
  # (the TURN server does STUN); later versions ignore it.
  irohToml = ''
    enable_relay = true
    http_bind_addr = "127.0.0.1:${toString irohOptions.port}"
    enable_stun = false
    enable_metrics = false
  '';

  # The endpoints iroh 0.35 and 1.0 use: the relay protocol (an HTTP upgrade), and the probes
  # clients use to tell whether the relay works.
  irohProbe = "proxy_pass ${irohUpstream};\nproxy_http_version 1.1;\n";
  irohLocations =
    if irohOptions.enable then
      {
        "/relay" =
          irohProbe
          + ''
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
          '';
        "= /ping" = irohProbe;
        "= /generate_204" = irohProbe;
      }
    else
      { };
in
{
  inherit paths;
  turn = {
    inherit (turnOptions)
      enable
      minPort
      maxPort
      lifetime
      ;
    port = turnPort;
    inherit coturn;
    conf = turnConf;
    credentials = credentialsArgv;
  };
  irohRelay = {
    inherit (irohOptions) enable port;
    url = irohRelayUrl;
    toml = irohToml;
    argv = [
      (program "iroh-relay")
      "--config-path"
      paths.irohRelayConfig
    ];
    locations = irohLocations;
  };
}
