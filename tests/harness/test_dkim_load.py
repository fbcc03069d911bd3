"""DKIM under concurrent mail between the local relays, and the harness's DKIM key data for OpenDKIM.

Regression: with a libunbound ResolverConfiguration, Debian's OpenDKIM parsed that file for every
message from several threads at once and died ("fatal flex scanner internal error"); Postfix then
answered 451 to every mail. The harness now answers OpenDKIM's key lookups from the zones' DKIM
records (TestDNSData) instead."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from harness_lib import DOMAINS, LocalRelays, load_local_relay

CLIENT = Path(__file__).resolve().parent / "dkim_load_client.py"
SENDER, RECIPIENT = "chat2.test", "chat.test"
THREADS, SENDERS, EACH = 8, 16, 10  # EACH stays within the relay's send burst
LOAD_TIMEOUT = 60.0

lr = load_local_relay()

ZONE = """$ORIGIN chat.test.
@ SOA chat.test. hostmaster.chat.test. 1 3600 600 86400 300
opendkim._domainkey.chat.test. TXT   "v=DKIM1;k=rsa;p=MIIBIj" "AQAB;s=email;t=s"
_adsp._domainkey.chat.test.    TXT   "dkim=discardable"
chat.test.                     TXT   "v=spf1 a ~all"
"""


def test_dkim_key_records_are_the_zones_domainkey_txt_records_joined() -> None:
    assert lr.dkim_key_records(ZONE) == {
        "opendkim._domainkey.chat.test": "v=DKIM1;k=rsa;p=MIIBIjAQAB;s=email;t=s",
        "_adsp._domainkey.chat.test": "dkim=discardable",
    }


def test_dkim_key_data_is_one_line_per_record() -> None:
    data = lr.dkim_key_data({"s._domainkey.b.test": "v=DKIM1;p=B", "s._domainkey.a.test": "v=DKIM1;p=A"})
    assert data == "s._domainkey.a.test v=DKIM1;p=A\ns._domainkey.b.test v=DKIM1;p=B\n"


def test_dkim_key_data_refuses_whitespace_in_a_value() -> None:
    with pytest.raises(lr.HarnessError):
        lr.dkim_key_data({"s._domainkey.a.test": "v=DKIM1; p=A"})


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
