# One relay with a self-signed certificate and a client: account creation on first login,
# wrong passwords, the encryption rule, delivery, the sender check, the nocreate switch, server
# metadata, one push notification (to a fake notification service on the client) and one full
# mailbox.
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
  pushPort = 9910;
  mailboxLimitKiB = 1000;
in
testers.runNixOSTest {
  name = "chatmail-basic";

  nodes.server =
    { nodes, pkgs, ... }:
    {
      # reads the metrics endpoint on loopback
      environment.systemPackages = [ pkgs.curl ];
      imports = [
        (common.relay {
          inherit domain domains;
          extraConfig.services.chatmail = {
            tls.mode = "selfSigned";
            pushNotificationUrl = "http://${nodes.client.networking.primaryIPAddress}:${toString pushPort}/notify";
            settings.max_mailbox_size = "${toString mailboxLimitKiB}K";
            settings.privacy_mail = "privacy@${domain}";
          };
        })
      ];
    };
  nodes.client = {
    imports = [ (common.client { inherit domains; }) ];
    networking.firewall.allowedTCPPorts = [ pushPort ];
  };

  testScript = ''
    ${common.driverHelpers}
    import json

    start_all()
    wait_for_relay(server)
    # The client trusts exactly the relay's self-signed certificate.
    cert = server.succeed("cat /var/lib/chatmail-tls/cert.pem")
    client.succeed("cat > /tmp/relay-ca.pem <<'EOF'\n" + cert + "EOF")
    ca = "--ca /tmp/relay-ca.pem"

    with subtest("accounts, logins, submission, encryption rule, delivery"):
        print(scenario("basic.py", "--domain ${domain}", ca))

    with subtest("IDLE: new mail is reported at once (Dovecot without the 500 ms notify delay)"):
        # the stock Dovecot reports a change no sooner than 500 ms after it: it cannot pass
        print(scenario("idle.py", "--domain ${domain}", ca, "--count 5", "--faster-than 500"))

    with subtest("no new accounts while /etc/chatmail-nocreate exists"):
        accounts = "--accounts /tmp/nocreate-accounts.json"
        print(scenario("nocreate.py prepare", "--domain ${domain}", accounts, ca))
        server.succeed("touch /etc/chatmail-nocreate")
        print(scenario("nocreate.py check", "--domain ${domain}", accounts, ca))
        server.succeed("rm /etc/chatmail-nocreate")

    with subtest("discovery: autoconfig (both URLs), MTA-STS and /new over HTTPS from the client"):
        server.wait_for_unit("nginx.service")
        server.wait_for_unit("chatmail-newemail.service")
        server.wait_for_open_port(443)
        print(scenario("discovery.py", "--domain ${domain}", ca))

    def mailbox(*args):
        output = client.succeed(
            "python3 ${common.scenarioDir}/mailbox.py --domain ${domain} --ca /tmp/relay-ca.pem"
            " --helo ${common.clientFqdn} " + " ".join(args))
        return json.loads(output.splitlines()[-1])

    with subtest("server metadata: admin contact, recipient limit, app versions (upstream 1.12)"):
        keys = ["/shared/admin", "/shared/comment", "/shared/vendor/deltachat/maxsmtprecipients",
                "/shared/vendor/deltachat/appversions"]
        found = mailbox("server-metadata", "metareads@${domain}", "metapass01", *keys)["metadata"]
        assert found["/shared/admin"] == "mailto:privacy@${domain}", found
        assert found["/shared/comment"] is None, found
        assert found["/shared/vendor/deltachat/maxsmtprecipients"] == "1000", found
        assert json.loads(found["/shared/vendor/deltachat/appversions"])["clients"], found

    with subtest("push: token set over IMAP METADATA, notification POSTed on delivery"):
        client.succeed(
            # the unit's PATH is systemd's, not the shell's: the interpreter by its full path
            "systemd-run --unit fake-push $(command -v python3) ${common.scenarioDir}/mailbox.py"
            " notify-endpoint --port ${toString pushPort} --record /tmp/push.jsonl")
        client.wait_for_open_port(${toString pushPort})
        alice, bob = ("pushalice@${domain}", "alicepass1"), ("pushbob01@${domain}", "bobpass01")
        mailbox("inbox", *bob)
        capabilities = mailbox("set-token", *alice, "vm-token-1")["capabilities"]
        assert "XDELTAPUSH" in capabilities, capabilities
        assert mailbox("send", *bob, alice[0])["replies"][0]["code"] == 250
        client.wait_until_succeeds("grep -q vm-token-1 /tmp/push.jsonl", timeout=30)
        assert "vm-token-1" in mailbox("get-tokens", *alice)["metadata"]

    with subtest("quota: a full mailbox bounces, GETQUOTAROOT shows the limit"):
        full, sender = ("quotafull@${domain}", "quotapass1"), ("quotasend@${domain}", "sendpass1")
        mailbox("inbox", *full)
        mailbox("inbox", *sender)
        # three messages of a third of the quota each (armored): the third does not fit. Dovecot
        # counts the uncompressed size of the gzip-stored mail (zlib_save = gz; measured with
        # Dovecot 2.3 in pkgs/chatmaild/tests/test_dovecot_quota.py): compressed, it would fit.
        size = str(${toString mailboxLimitKiB} * 1024 // 4)
        replies = mailbox("send", *sender, full[0], "--count 3 --size", size)["replies"]
        assert [r["code"] for r in replies] == [250] * 3, replies
        def bounced(_):
            inbox = mailbox("inbox", *sender)
            return any("Quota exceeded" in body for body in inbox["bodies"])
        retry(bounced, timeout=30)
        inbox = mailbox("inbox", *full)
        assert len(inbox["messages"]) == 2, inbox["messages"]
        (storage,) = [q for q in inbox["quotas"] if q["resource"] == "STORAGE"]
        assert storage["limit"] == ${toString mailboxLimitKiB}, storage
        # the stored size (LF line ends) is a little below RFC822.SIZE (CRLF), far above gzip's
        sizes = sum(m["size"] for m in inbox["messages"])
        assert 0.95 * sizes / 1024 < storage["usage"] <= sizes / 1024 + 1, (storage, sizes)

    with subtest("metrics: one endpoint on loopback, counters moved by the mail above"):
        server.wait_for_unit("chatmail-metrics.service")
        metrics = "curl -sf http://127.0.0.1:3903/metrics"
        for counter in ("delivered_mail", "outgoing_encrypted_mail_count", "rejected_unencrypted_mail_count",
                        "created_accounts", "quota_exceeded", "dkim_signed", "dovecot_mail_deliveries_total"):
            server.wait_until_succeeds(f"{metrics} | grep -E '^{counter} [1-9]'", timeout=30)
        server.succeed(f"{metrics} | grep -E '^dovecot_stats_up 1'")
        server.fail("curl -sf http://${domain}:3903/metrics")  # loopback only
        # the journal: in memory, three days
        server.succeed("grep -x 'Storage=volatile' /etc/systemd/journald.conf")
        server.succeed("grep -x 'MaxRetentionSec=3d' /etc/systemd/journald.conf")

    with subtest("killed daemons come back (Restart=always)"):
        for unit in ("doveauth", "filtermail", "filtermail-incoming", "chatmail-metadata",
                     "chatmail-metrics", "chatmail-mxdeliv", "chatmail-mxdeliv-outgoing"):
            pid = server.succeed(f"systemctl show -P MainPID {unit}.service").strip()
            server.succeed(f"systemctl kill --signal=SIGKILL {unit}.service")
            server.wait_until_succeeds(
                f'test "$(systemctl show -P MainPID {unit}.service)" != {pid}'
                f" && systemctl is-active {unit}.service", timeout=30)
        wait_for_relay(server)
  '';
}
