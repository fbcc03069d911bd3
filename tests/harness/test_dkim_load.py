"""DKIM under concurrent mail between the local relays: the sending relay's OpenDKIM signs and the
receiving relay's filtermail verifies many mails at once; all arrive, OpenDKIM stays up.

Regression: Debian's OpenDKIM, verifying with a libunbound ResolverConfiguration, parsed that file
for every message from several threads at once and died ("fatal flex scanner internal error");
Postfix then answered 451 to every mail. OpenDKIM now only signs, without a resolver setting."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from harness_lib import DOMAINS, LocalRelays

CLIENT = Path(__file__).resolve().parent / "dkim_load_client.py"
SENDER, RECIPIENT = "chat2.test", "chat.test"
THREADS, SENDERS, EACH = 8, 16, 10  # EACH stays within the relay's send burst
LOAD_TIMEOUT = 60.0


def opendkim_states(relays: LocalRelays) -> dict[str, str]:
    status = relays.local_relay("status", timeout=60).stdout
    return {line.split()[0]: found.group(1) for line in status.splitlines()
            if (found := re.search(r"opendkim (running|DOWN)", line))}


def test_concurrent_mail_between_relays_with_dkim_is_all_delivered(relays: LocalRelays) -> None:
    result = relays.local_relay("exec", "--", sys.executable, str(CLIENT), SENDER, RECIPIENT,
                                "--ca", relays.ca, "--threads", str(THREADS),
                                "--senders", str(SENDERS), "--each", str(EACH),
                                timeout=LOAD_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["errors"] == [], found["errors"][:5]
    assert found["submitted"] == SENDERS * EACH
    assert found["delivered"] == found["submitted"], found
    assert opendkim_states(relays) == {domain: "running" for domain in DOMAINS}
