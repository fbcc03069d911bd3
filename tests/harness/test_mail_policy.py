"""The mail path as other relays and clients meet it (issues 15 and 17), on two relays of their own
with a small quota and size limit: every reply code of submission on the milter path, the DKIM
policy of port 25 with the relays' real keys (a forged From signed by the other relay's key
included), MAIL FROM reset, what the recipient's copy shows, and a bounce from one relay to the
other that arrives signed and accepted."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness_lib import UP_TIMEOUT, harness_state_dir, run_local_relay

CLIENT = Path(__file__).with_name("policy_client.py")
FIRST, SECOND = "pol1.test", "_pol2.test"
SIZE_LIMIT = 400_000
QUOTA_KIB = 1000
BURST = 10  # the default send burst
CLIENT_TIMEOUT = 180


@dataclass
class Pair:
    state: Path
    description: dict

    def client(self, *args: str) -> dict:
        result = run_local_relay("--state", str(self.state), "exec", "--", sys.executable, str(CLIENT), *args,
                                 "--ca", self.description["ca_cert"], timeout=CLIENT_TIMEOUT)
        print(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def relay_dir(self, domain: str) -> Path:
        return Path(next(r["state_dir"] for r in self.description["relays"] if r["domain"] == domain))

    def logs(self) -> str:
        result = run_local_relay("--state", str(self.state), "logs", "--tail", "40", timeout=60)
        return result.stdout


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    state = harness_state_dir()
    try:
        up = run_local_relay("up", "--state", str(state), "--prefix", f"cmp{secrets.token_hex(2)}-",
                             "--domains", f"{FIRST},{SECOND}", "--setting", f"max_mailbox_size={QUOTA_KIB}K",
                             "--setting", f"max_message_size={SIZE_LIMIT}", timeout=UP_TIMEOUT)
        assert up.returncode == 0, up.stdout + up.stderr
        yield Pair(state, json.loads((state / "relays.json").read_text()))
    finally:
        run_local_relay("down", "--state", str(state), "--wipe", timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def test_submission_reply_codes(pair: Pair) -> None:
    found = pair.client("replies", "--domain", FIRST, "--burst", str(BURST), "--size-limit", str(SIZE_LIMIT))
    assert found["cleartext"] == {"code": 523, "text": "Encryption Needed: Invalid Unencrypted Mail"}
    assert found["forged_from"]["code"] == 500 and found["forged_from"]["text"].startswith("Invalid FROM <")
    assert found["sender_not_login"]["code"] == 553, found["sender_not_login"]
    assert found["too_large"]["code"] == 552, found["too_large"]
    assert [r["code"] for r in found["burst"]] == [250] * BURST + [450]
    assert found["burst"][-1]["text"].startswith("4.7.1: Too much mail from ")


def test_port_25_needs_a_dkim_signature_of_the_from_domain(pair: Pair) -> None:
    key = pair.relay_dir(SECOND) / "dkim" / "opendkim.private"
    found = pair.client("dkim", "--domain", FIRST, "--other", SECOND, "--key", str(key))
    refused = {"code": 554, "text": "5.7.1 No DKIM signature found"}
    invalid = {"code": 554, "text": "5.7.1 No valid DKIM signature found"}
    assert found["unsigned"] == refused
    assert found["forged_from_signed_by_other"] == invalid
    assert found["forged_from_claiming_own_domain"] == invalid
    assert found["tampered"] == invalid
    assert found["unsigned_mailer_daemon"] == refused
    assert found["signed_mailer_daemon"]["code"] == 250
    assert found["genuine"]["code"] == 250
    # the report and the genuine mail; nothing of the refused ones
    assert found["delivered_count"] == 2
    # MAIL FROM differed from From: reset to the null sender (upstream 1.10+)
    assert found["genuine_return_path"] == "<>"


def test_recipients_copy_shows_no_trace_headers_or_addresses(pair: Pair) -> None:
    copies = pair.client("federate", "--from", FIRST, "--to", SECOND)["copies"]
    assert len(copies) == 2
    for direction, copy in copies.items():
        head = copy.split("\r\n\r\n", 1)[0].lower()
        for name in ("received:", "dkim-signature:", "authentication-results:", "x-originating-ip:"):
            assert f"\n{name}" not in "\n" + head, f"{direction}: {name} in\n{head}"
        assert not re.search(r"198\.18\.\d+\.\d+", copy), f"{direction}: an address of the harness in\n{copy}"


def test_bounce_between_relays_arrives_signed_and_accepted(pair: Pair) -> None:
    found = pair.client("bounce", "--from", FIRST, "--to", SECOND, "--size", "100000")
    assert found["notice"] is not None, f"no bounce reached {found['sender']} after {found['sent']} mails\n{pair.logs()}"
    notice = found["notice"]
    head = notice.split("\r\n\r\n", 1)[0]
    assert re.search(rf"^From: .*<MAILER-DAEMON@{re.escape(SECOND)}>", head, re.MULTILINE | re.IGNORECASE), head
    assert "Quota exceeded" in notice
    # the returned headers neither: the second relay's milter dropped the Received header that
    # named the first relay's address before the mail was queued
    assert not re.search(r"198\.18\.\d+\.\d+", notice), notice
    assert "\nreceived:" not in notice.lower(), notice
    # it reached the sender's INBOX through the first relay's port 25, which takes no MAILER-DAEMON
    # mail without a valid signature of its From domain (test above): the second relay signed it
