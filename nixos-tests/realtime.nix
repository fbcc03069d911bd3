# Calls and realtime: one relay with the TURN server and the iroh relay (both on by default) and a
# client. The client finds TURN credentials and the iroh relay in IMAP metadata and reaches
# iroh-relay through nginx's routes (nixos-tests/scenarios/realtime.py, which the local harness
# runs without an iroh relay); the TURN secret was generated once and coturn listens on 3478.
{
  lib,
  testers,
  python3,
  chatmaild,
  chatmailModule,
}:

let
  common = import ./common.nix {
    inherit
      lib
      python3
      chatmaild
      chatmailModule
      ;
  };
  domain = "chat1.test";
  domains.server = domain;
in
testers.runNixOSTest {
  name = "chatmail-realtime";

  nodes.server = common.relay {
    inherit domain domains;
    extraConfig.services.chatmail.tls.mode = "selfSigned";
  };
  nodes.client = common.client { inherit domains; };

  testScript = ''
    ${common.driverHelpers}

    start_all()
    wait_for_relay(server)
    for unit in ("coturn.service", "chatmail-turn-credentials.service", "iroh-relay.service",
                 "nginx.service"):
        server.wait_for_unit(unit)
    server.wait_for_open_port(3478)
    server.wait_for_open_port(3340)
    server.wait_for_open_port(443)
    cert = server.succeed("cat /var/lib/chatmail-tls/cert.pem")
    client.succeed("cat > /tmp/relay-ca.pem <<'EOF'\n" + cert + "EOF")

    with subtest("the TURN secret is generated once, for root only"):
        server.succeed("test -s /var/lib/chatmail-turn/static-auth-secret")
        server.succeed("test $(stat -c %a /var/lib/chatmail-turn/static-auth-secret) = 600")
        # not in coturn's configuration in the store, only in its runtime copy
        server.fail("grep -rqF \"$(cat /var/lib/chatmail-turn/static-auth-secret)\" /etc")

    with subtest("TURN credentials and the iroh relay in IMAP metadata; iroh routes through nginx"):
        print(scenario("realtime.py", "--domain ${domain}", "--ca /tmp/relay-ca.pem", "--iroh-relay"))

    with subtest("iroh-relay itself listens on loopback only"):
        client.fail("python3 -c 'import socket; socket.create_connection((\"${domain}\", 3340), timeout=5)'")
  '';
}
