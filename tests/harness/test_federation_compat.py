"""How the chatmail network federates today (upstream 1.10-1.12), on four relays of this module:

- chat.test sends (certificate from the harness CA; its Postfix logs TLS sessions);
- chat2.test receives mail over HTTPS while an nft rule in its namespace refuses port 25;
- _r3.test has a self-signed certificate, as upstream's relays of domains starting with "_";
- chat4.test is the control: a self-signed certificate under an ordinary name, no HTTPS
  fallback, and MIME input processing on (as before upstream 1.12).

All with privacy_mail set and max_message_size = 1000000. The client side runs in the client
namespace (tests/harness/federation_client.py and nixos-tests/scenarios/mailbox.py); what the
relays did is read from their Postfix logs.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from chatmaild.metadata import DEFAULT_APPVERSIONS
from harness_lib import SCENARIOS, UP_TIMEOUT, LocalRelays, harness_state_dir, run_local_relay

CLIENT = Path(__file__).resolve().parent / "federation_client.py"
DOMAINS = ("chat.test", "chat2.test", "_r3.test", "chat4.test")
SELF_SIGNED = ("_r3.test", "chat4.test")
CONTROL = "chat4.test"
PRIVACY_MAIL = "privacy@example.org"
MAX_MESSAGE_SIZE = 1_000_000
LOG_WAIT = 30.0  # Postfix logs through postlogd, a moment after the fact
NOT_DELIVERED_WAIT = 8.0  # how long a message that must not arrive is waited for


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRelays]:
    """This module's own relays (named like the session fixture, so that the daemon logs are
    attached to a failing test's report)."""
    state = harness_state_dir()
    params = tmp_path_factory.mktemp("params") / "params.json"
    params.write_text(json.dumps({
        "chat.test": {"postfixMain": {"smtp_tls_loglevel": 1}},
        CONTROL: {"mxdeliv": {"fallback": False},
                  "postfixMain": {"disable_mime_input_processing": False}},
    }))
    try:
        up = run_local_relay("up", "--state", str(state), "--prefix", f"cmf{secrets.token_hex(2)}-",
                             "--domains", ",".join(DOMAINS), "--self-signed", ",".join(SELF_SIGNED),
                             "--params", str(params), "--setting", f"privacy_mail={PRIVACY_MAIL}",
                             "--setting", f"max_message_size={MAX_MESSAGE_SIZE}",
                             timeout=UP_TIMEOUT)
        if up.returncode != 0:
            pytest.fail(f"local-relay up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        yield LocalRelays(state, json.loads((state / "relays.json").read_text()))
    finally:
        run_local_relay("down", "--state", str(state), "--wipe", timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def client(relays: LocalRelays, *args: str) -> dict:
    """Run a federation_client.py check; its JSON findings."""
    result = relays.run_client(CLIENT, "--ca", relays.description["trust_file"], *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def postfix_log(relays: LocalRelays, domain: str) -> Path:
    return Path(relays.relay(domain)["state_dir"]) / "log" / "postfix.log"


def wait_for_log(relays: LocalRelays, domain: str, pattern: str) -> re.Match:
    """The first line of DOMAIN's Postfix log that matches PATTERN, waiting for it."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        found = re.search(pattern, postfix_log(relays, domain).read_text(), re.MULTILINE)
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in {postfix_log(relays, domain)}"
        time.sleep(0.2)


@contextlib.contextmanager
def port_25_refused(relays: LocalRelays, domain: str) -> Iterator[None]:
    """An nft rule in DOMAIN's namespace refuses TCP port 25 from other hosts (a reset: the
    sender notices at once instead of after its connect timeout)."""
    netns = relays.relay(domain)["netns"]

    def nft(*command: str) -> None:
        subprocess.run(["ip", "netns", "exec", netns, "nft", *command], check=True,
                       capture_output=True, timeout=30)

    nft("add", "table", "inet", "harness_block")
    nft("add", "chain", "inet", "harness_block", "input",
        "{ type filter hook input priority 0 ; }")
    nft("add", "rule", "inet", "harness_block", "input", "iifname", "eth0", "tcp", "dport", "25",
        "reject", "with", "tcp", "reset")
    try:
        yield
    finally:
        nft("delete", "table", "inet", "harness_block")


# --- server metadata and the admin contact


def test_server_metadata_as_upstream_1_12(relays: LocalRelays) -> None:
    keys = ["/shared/admin", "/shared/comment", "/shared/vendor/deltachat/maxsmtprecipients",
            "/shared/vendor/deltachat/appversions"]
    account = ("metauser1@chat.test", secrets.token_urlsafe(12))
    result = relays.run_client(SCENARIOS / "mailbox.py", "--domain", "chat.test", "--ca",
                               relays.description["trust_file"], "server-metadata", *account, *keys)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])["metadata"]
    # Dovecot's admin contact is the operator's privacy_mail; no server comment
    assert found["/shared/admin"] == f"mailto:{PRIVACY_MAIL}"
    assert found["/shared/comment"] is None
    assert found["/shared/vendor/deltachat/maxsmtprecipients"] == "1000"
    appversions = found["/shared/vendor/deltachat/appversions"]
    assert "\n" not in appversions
    assert json.loads(appversions) == json.loads(DEFAULT_APPVERSIONS.read_text())


def test_maxsmtprecipients_is_what_postfix_takes(relays: LocalRelays) -> None:
    # Delta Chat core sends to more recipients as several transactions of this many
    found = client(relays, "rcpt-limit", "chat.test", "chat2.test", "--count", "1001")
    assert found["accepted"] == 1000
    assert found["refusal"]["index"] == 1000 and found["refusal"]["code"] == 452, found


# --- TLS to other relays


def test_self_signed_peers_only_where_upstream_accepts_them(relays: LocalRelays) -> None:
    # a domain starting with "_": TLS without certificate checks, delivered
    found = client(relays, "deliver", "chat.test", "_r3.test")
    assert found["delivered"] and not found["not_intact"], found
    wait_for_log(relays, "chat.test", r"Untrusted TLS connection established to _r3\.test\[")
    # an ordinary name with the same kind of certificate: not delivered, still queued
    found = client(relays, "deliver", "chat.test", CONTROL, "--timeout", str(NOT_DELIVERED_WAIT))
    assert not found["delivered"], found
    wait_for_log(relays, "chat.test", r"certificate verification failed for chat4\.test\[")
    recipient = re.escape(found["recipient"])
    wait_for_log(relays, "chat.test", rf"to=<{recipient}>, .*status=deferred")
    # an IP literal: TLS without certificate checks, then it is up to the peer (chat4.test has
    # no such address and refuses it)
    literal = found["recipient"].split("@")[0] + "@[" + relays.relay(CONTROL)["ipv4"] + "]"
    client(relays, "submit", "chat.test", literal)
    address = re.escape(relays.relay(CONTROL)["ipv4"])
    wait_for_log(relays, "chat.test", rf"Untrusted TLS connection established to {address}\[")
    line = wait_for_log(relays, "chat.test", rf"to=<{re.escape(literal)}>, .*").group(0)
    assert "said: 550 5.1.1" in line and "in reply to RCPT TO" in line, line


# --- relay-to-relay mail over HTTPS (/mxdeliv)


def test_mail_crosses_over_https_when_port_25_is_refused(relays: LocalRelays) -> None:
    with port_25_refused(relays, "chat2.test"):
        found = client(relays, "deliver", "chat.test", "chat2.test")
        assert found["delivered"] and not found["not_intact"], found
        recipient = re.escape(found["recipient"])
        line = wait_for_log(relays, "chat.test", rf"to=<{recipient}>, .*status=sent.*").group(0)
        assert "relay=127.0.0.1[127.0.0.1]:10084" in line
        assert "250 2.0.0 Delivered over HTTPS to chat2.test" in line
        # chat2.test took it on its /mxdeliv smtpd, which has port 25's checks (filtermail's
        # incoming milter: an unsigned message would have been refused)
        message_id = re.escape(found["message_id"].strip("<>"))
        queue_id = wait_for_log(relays, "chat2.test", rf"(\w+): message-id=<{message_id}>").group(1)
        wait_for_log(relays, "chat2.test", rf"postfix/mxdeliv/smtpd\[\d+\]: {queue_id}: client=")
        # the control relay has no HTTPS fallback: its message waits in the queue
        control = client(relays, "deliver", CONTROL, "chat2.test", "--timeout",
                         str(NOT_DELIVERED_WAIT))
        assert not control["delivered"], control
        wait_for_log(relays, CONTROL, rf"to=<{re.escape(control['recipient'])}>, relay=none, .*"
                                      r"status=deferred \(connect to chat2\.test\[[0-9.]+\]:25: "
                                      r"Connection refused\)")
    # with port 25 open again, mail goes over SMTP: HTTPS is the fallback only
    found = client(relays, "deliver", "chat.test", "chat2.test")
    assert found["delivered"], found
    line = wait_for_log(relays, "chat.test", rf"to=<{re.escape(found['recipient'])}>, .*").group(0)
    assert "relay=chat2.test[" in line and ":25," in line, line


@pytest.mark.parametrize(("args", "status", "reply"), [
    (["--method", "GET"], 405, r"501 5\.5\.1 GET is not allowed, POST the message$"),
    (["--from", "a@chat.test"], 400, r"501 5\.5\.4 No X-Mail-To header"),
    (["--to", "not an address"], 400, r"501 5\.1\.3 Bad recipient address syntax"),
    # every check of port 25 applies: encryption, a DKIM signature, no relaying
    (["--account", "--body", "plain"], 400, r"523 Encryption Needed"),
    (["--account", "--from", "a@chat.test"], 400, r"5\d\d .*DKIM"),
    (["--to", "victim123@chat.test"], 400, r"554 5\.7\.1 <victim123@chat\.test>: Relay access denied"),
    (["--account", "--body", f"size:{MAX_MESSAGE_SIZE + 1}"], 413,
     r"552 5\.3\.4 Message size exceeds fixed limit$"),
])
def test_mxdeliv_answers_bad_requests_clearly(relays: LocalRelays, args, status, reply) -> None:
    found = client(relays, "post", "chat2.test", *args)
    assert found["status"] == status and re.match(reply, found["reply"]), found


# --- queue lifetime, MIME input processing


def test_postfix_runs_with_upstream_1_12_queue_and_mime_settings(relays: LocalRelays) -> None:
    config = Path(relays.relay("chat.test")["state_dir"]) / "postfix"
    values = subprocess.run(["postconf", "-c", str(config), "-h", "maximal_queue_lifetime",
                             "bounce_queue_lifetime", "disable_mime_input_processing"],
                            check=True, capture_output=True, text=True, timeout=30).stdout.split()
    assert values == ["2d", "2d", "yes"]
    # qmgr would log "... is larger than ... - adjusting" for a bounce lifetime above 2d
    assert "adjusting" not in postfix_log(relays, "chat.test").read_text()
    for port in ("25", "587"):
        assert "8bitmime" in client(relays, "ehlo", "chat.test", port)["keywords"]


def test_header_checks_leave_mime_part_headers_alone(relays: LocalRelays) -> None:
    # submission's header checks drop X-Mailer lines: the message's own still goes, one in a
    # MIME part is body and stays (DKIM's body hash covers it)
    header, part_header = "X-Mailer: the message's", "X-Mailer: a part header"
    found = client(relays, "deliver", "chat.test", "chat2.test", "--header", header,
                   "--part-header", part_header)
    assert found["delivered"] and not found["not_intact"], found
    assert part_header in found["body"]
    assert "X-Mailer" not in found["headers"]
    # with MIME input processing on (the control), the part header is gone: the body changed
    control = client(relays, "deliver", CONTROL, CONTROL, "--part-header", part_header)
    assert control["delivered"] and "delivered body differs" in control["not_intact"], control
    assert part_header not in control["body"]
