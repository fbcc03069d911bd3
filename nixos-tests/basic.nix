# One relay with a self-signed certificate and a client: account creation on first login,
# wrong passwords, the encryption rule, delivery, the sender check and the nocreate switch.
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
  name = "chatmail-basic";

  nodes.server = common.relay {
    inherit domain domains;
    extraConfig.services.chatmail.tls.mode = "selfSigned";
  };
  nodes.client = common.client { inherit domains; };

  testScript = ''
    ${common.driverHelpers}

    start_all()
    wait_for_relay(server)
    # The client trusts exactly the relay's self-signed certificate.
    cert = server.succeed("cat /var/lib/chatmail-tls/cert.pem")
    client.succeed("cat > /tmp/relay-ca.pem <<'EOF'\n" + cert + "EOF")
    ca = "--ca /tmp/relay-ca.pem"

    with subtest("accounts, logins, submission, encryption rule, delivery"):
        print(scenario("basic.py", "--domain ${domain}", ca))

    with subtest("no new accounts while /etc/chatmail-nocreate exists"):
        accounts = "--accounts /tmp/nocreate-accounts.json"
        print(scenario("nocreate.py prepare", "--domain ${domain}", accounts, ca))
        server.succeed("touch /etc/chatmail-nocreate")
        print(scenario("nocreate.py check", "--domain ${domain}", accounts, ca))
        server.succeed("rm /etc/chatmail-nocreate")

    with subtest("killed daemons come back (Restart=always)"):
        for unit in ("doveauth", "filtermail", "filtermail-incoming"):
            pid = server.succeed(f"systemctl show -P MainPID {unit}.service").strip()
            server.succeed(f"systemctl kill --signal=SIGKILL {unit}.service")
            server.wait_until_succeeds(
                f'test "$(systemctl show -P MainPID {unit}.service)" != {pid}'
                f" && systemctl is-active {unit}.service", timeout=30)
        wait_for_relay(server)
  '';
}
