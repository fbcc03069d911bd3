"""Discovery and deliverability on the local relays: autoconfig as Delta Chat core finds it, /new,
the DNS zone served by BIND, DKIM between relays, ALPN on port 443.

The client side runs in the client namespace (tests/harness/discovery_client.py) and reports JSON;
the relay side is read from the relays' state (nginx access log, zone file, DKIM key)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness_lib import SCENARIOS, LocalRelays

CLIENT = Path(__file__).resolve().parent / "discovery_client.py"
VENV_BIN = Path(sys.executable).parent
HUB_DNS = "198.18.0.1"
# core accepts the harness's self-signed certificates only for domains starting with "_"
DISCOVERY_DOMAIN = "_r3.test"
AUTOCONFIG_GET = re.compile(
    r'"GET (/\.well-known/autoconfig/mail/config-v1\.1\.xml|/mail/config-v1\.1\.xml)\S* '
    r'HTTP/[0-9.]+" 200 ')


def client_check(relays: LocalRelays, *args: str) -> dict:
    result = relays.run_client(CLIENT, "--ca", relays.ca, *args)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def state_dir(relays: LocalRelays, domain: str) -> Path:
    return Path(relays.relay(domain)["state_dir"])


def test_deltachat_discovers_the_relay_through_autoconfig(relays: LocalRelays) -> None:
    access_log = state_dir(relays, DISCOVERY_DOMAIN) / "log" / "access.log"
    before = access_log.stat().st_size if access_log.exists() else 0
    found = client_check(relays, "deltachat", DISCOVERY_DOMAIN)
    assert found["addr"].endswith(f"@{DISCOVERY_DOMAIN}")
    # only address and password were given: core found the servers itself ...
    assert all(found["transports"][0][key] is None for key in ("imapServer", "smtpServer"))
    # ... and it read our autoconfig file to do so
    with access_log.open() as log:
        log.seek(before)
        fetched = [line for line in log if AUTOCONFIG_GET.search(line)]
    assert fetched, f"no autoconfig GET in {access_log} while core configured {found['addr']}"


def test_new_returns_working_credentials(relays: LocalRelays) -> None:
    found = client_check(relays, "newemail", DISCOVERY_DOMAIN)
    localpart, _, domain = found["credentials"]["email"].partition("@")
    assert domain == DISCOVERY_DOMAIN and len(localpart) == 9  # username_max_length
    assert len(found["credentials"]["password"]) >= 9
    assert found["imap_login"] and "XCHATMAIL" in found["capabilities"]
    # a self-signed relay (a "_" domain, as upstream) answers GET with credentials too, for the
    # index page's dclogin: link (tests/harness/test_realtime.py)
    assert found["get"] == {"status": 200}
    # elsewhere a browser following a dcaccount: link gets sent to Delta Chat
    found = client_check(relays, "newemail", "chat.test")
    assert found["get"] == {"status": 301, "location": "dcaccount:https://chat.test/new"}


def test_port_443_reaches_imap_smtp_and_https_by_alpn(relays: LocalRelays) -> None:
    found = client_check(relays, "alpn", DISCOVERY_DOMAIN)
    assert found["imap"]["greeting"].startswith("* OK ")
    assert found["smtp"]["greeting"].startswith(f"220 {DISCOVERY_DOMAIN} ESMTP")
    assert found["http/1.1"]["greeting"].startswith("HTTP/1.1 200 OK")
    assert "Content-Type: application/xml" in found["http/1.1"]["greeting"]


@pytest.mark.parametrize("domain", ["chat.test", DISCOVERY_DOMAIN])
def test_zone_is_valid_and_served(relays: LocalRelays, domain: str) -> None:
    relay = relays.relay(domain)
    zone = state_dir(relays, domain) / "dns.zone"
    # "-k ignore": the harness's names start with "_", which hostname rules forbid
    checked = subprocess.run(["named-checkzone", "-k", "ignore", domain, str(zone)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = dns_check(relays, relay, state_dir(relays, domain) / "dkim" / "opendkim.private")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All DNS records are in place." in result.stdout
    for rtype in ("A", "MX", "TXT", "CNAME", "CAA", "SRV"):
        assert re.search(rf"^ok\s+\S+\s+{rtype}\s", result.stdout, re.MULTILINE), rtype


def dns_check(relays: LocalRelays, relay: dict, key: Path) -> subprocess.CompletedProcess:
    ini = Path(relay["state_dir"]) / "chatmail.ini"
    return relays.local_relay(
        "exec", "--", str(VENV_BIN / "chatmail-dns-zone"), str(ini), "--ipv4", relay["ipv4"],
        "--dkim-key", str(key), "--check", "--resolver", HUB_DNS, timeout=60)


def test_zone_check_notices_a_wrong_dkim_key(relays: LocalRelays, tmp_path: Path) -> None:
    subprocess.run(["opendkim-genkey", "-D", str(tmp_path), "-s", "other", "-d", "chat.test"],
                   check=True, timeout=60)
    tmp_path.chmod(0o755)
    (tmp_path / "other.private").chmod(0o644)
    result = dns_check(relays, relays.relay("chat.test"), tmp_path / "other.private")
    assert result.returncode != 0
    dkim_lines = [line for line in result.stdout.splitlines() if "._domainkey.chat.test." in line
                  and "_adsp" not in line]
    assert dkim_lines and not any(line.startswith("ok") for line in dkim_lines), result.stdout


def test_mail_between_relays_is_signed_verified_and_delivered_without_trace(relays: LocalRelays) -> None:
    # the receiving relay refuses unsigned mail (next test) and mail whose signature does not
    # verify (tests/harness/test_mail_policy.py): this one arrived, so it was signed and verified
    found = client_check(relays, "dkim", "chat2.test", DISCOVERY_DOMAIN)
    headers = re.sub(r"\r?\n[ \t]+", " ", found["delivered_headers"])  # unfolded
    # header privacy at delivery (upstream 1.10+): no trace or DKIM headers in the copy
    assert not re.search(r"^(Received|DKIM-Signature|Authentication-Results):", headers,
                         re.MULTILINE | re.IGNORECASE), headers
    # header privacy on submission: the submitting client's address and software stay behind
    assert "198.18." not in headers
    assert not re.search(r"^(User-Agent|X-Mailer|X-Originating-IP):", headers,
                         re.MULTILINE | re.IGNORECASE)


def test_unsigned_mail_from_another_relay_is_refused(relays: LocalRelays) -> None:
    found = client_check(relays, "unsigned", "chat.test", DISCOVERY_DOMAIN)
    assert found == {"code": 554, "reply": "5.7.1 No DKIM signature found"}, found


@pytest.mark.parametrize("domain", ["chat.test", DISCOVERY_DOMAIN])
def test_discovery_scenario(relays: LocalRelays, domain: str) -> None:
    # the VM test basic runs the same client script (nixos-tests/scenarios/discovery.py)
    result = relays.run_client(SCENARIOS / "discovery.py", "--domain", domain, "--ca", relays.ca)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"https://autoconfig.{domain}/mail/config-v1.1.xml: as rendered" in result.stdout


def test_index_page_qr_code_holds_the_account_link(relays: LocalRelays) -> None:
    # (a self-signed relay's index page links a dclogin: URL instead: test_realtime.py)
    found = client_check(relays, "qr", "chat.test")
    image = state_dir(relays, "chat.test") / "www" / found["source"].lstrip("/")
    assert found["content_type"] == "image/png"
    assert found["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", str(image)], capture_output=True,
                             text=True, timeout=60)
    assert decoded.stdout.strip() == "DCACCOUNT:https://chat.test/new", decoded
