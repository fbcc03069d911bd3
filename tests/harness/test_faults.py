"""Faults lose nothing: a counted stream of encrypted messages while filtermail (the submission
milter), then doveauth, then Dovecot are killed (SIGKILL) and started again the way local-relay
starts them. Postfix defers (4xx) while a daemon is down and delivers what it accepted once it is
back; at the end the mailboxes hold exactly the messages Postfix accepted. The same for mail
between relays while the receiving relay's filtermail-incoming (the port 25 milter) is killed, and
for a filtermail that hangs (SIGSTOP): Postfix gives up on it after its milter timeouts and defers,
never passing a mail unchecked. And 100 concurrent first logins of one account store one hash."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from email.parser import BytesHeaderParser
from pathlib import Path

from harness_lib import LOCAL_RELAY, LocalRelays

from chatmaild.passwords import verify_password

FAULT_CLIENT = Path(__file__).with_name("fault_client.py")
DOMAIN = "chat.test"
DAEMONS = ("filtermail", "doveauth", "dovecot")
STREAM_COUNT = 80
STREAM_INTERVAL = 0.25  # s: 20 s of messages, the three faults inside
DOWN_SECONDS = 2.5
DELIVERY_TIMEOUT = 120.0
GZIP_MAGIC = b"\x1f\x8b"


def pid_of(state_dir: Path, daemon: str) -> int:
    pid_file = state_dir / "dovecot" / "run" / "master.pid" if daemon == "dovecot" else state_dir / "run" / f"{daemon}.pid"
    return int(pid_file.read_text().split()[0])


def delivered_message_ids(state_dir: Path, recipients: list[str]) -> list[str]:
    parser = BytesHeaderParser()
    found = []
    for addr in recipients:
        for folder in ("new", "cur"):
            for path in sorted((state_dir / "mailboxes" / addr / folder).glob("*")):
                stored = path.read_bytes()
                if stored.startswith(GZIP_MAGIC):  # Dovecot's zlib_save = gz
                    stored = gzip.decompress(stored)
                found.append(str(parser.parsebytes(stored)["Message-ID"]).strip())
    return found


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout:.0f}s"
        time.sleep(0.1)


def stream_with_faults(relays: LocalRelays, tmp_path: Path, domain: str, recipient_domain: str,
                       faults: list[tuple[str, str]], count: int = STREAM_COUNT) -> dict:
    """Submit COUNT messages on DOMAIN to recipients on RECIPIENT_DOMAIN while each (daemon, relay)
    of FAULTS is killed and restarted in turn; the client's result once Postfix delivered all."""
    ready = tmp_path / "ready"
    client = subprocess.Popen(
        [sys.executable, str(LOCAL_RELAY), "--state", str(relays.state), "exec", "--", sys.executable,
         str(FAULT_CLIENT), "stream", "--domain", domain, "--recipient-domain", recipient_domain,
         "--ca", relays.ca, "--count", str(count), "--interval", str(STREAM_INTERVAL), "--ready", str(ready)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(ready, client, 120)
        for daemon, relay in faults:
            time.sleep(1.5)
            os.kill(pid_of(Path(relays.relay(relay)["state_dir"]), daemon), signal.SIGKILL)
            print(f"{time.strftime('%H:%M:%S')} killed {daemon} of {relay}", flush=True)
            time.sleep(DOWN_SECONDS)
            restarted = relays.local_relay("restart", daemon, "--relay", relay, timeout=120)
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            print(restarted.stdout.strip(), flush=True)
        out, err = client.communicate(timeout=count * STREAM_INTERVAL + 180)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    print(err)
    assert client.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    sending_dir = Path(relays.relay(domain)["state_dir"])
    receiving_dir = Path(relays.relay(recipient_domain)["state_dir"])
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        # what Postfix deferred while a daemon was away: deliver it now
        for state_dir in {sending_dir, receiving_dir}:
            subprocess.run(["postqueue", "-c", str(state_dir / "postfix"), "-f"], capture_output=True, timeout=30)
        result["delivered"] = delivered_message_ids(receiving_dir, result["recipients"])
        if len(result["delivered"]) >= len(result["accepted"]) or time.monotonic() > deadline:
            return result


def test_killed_daemons_lose_no_accepted_message(relays: LocalRelays, tmp_path: Path) -> None:
    result = stream_with_faults(relays, tmp_path, DOMAIN, DOMAIN, [(daemon, DOMAIN) for daemon in DAEMONS])
    accepted_ids = [message_id for message_id, _ in result["accepted"]]
    delivered = result["delivered"]
    print(f"{STREAM_COUNT} submitted: Postfix accepted {len(accepted_ids)}, deferred {len(result['deferred'])} "
          f"(codes {sorted(set(result['deferred']))}), refused {len(result['refused'])}, AUTH failed "
          f"{len(result['auth_failed'])} (codes {sorted(set(result['auth_failed']))}); "
          f"in the mailboxes: {len(delivered)}")
    assert result["refused"] == [], "a fault made Postfix refuse a mail (5xx) instead of deferring"
    assert all(code in (454, 535) for code in result["auth_failed"]), result["auth_failed"]
    assert result["deferred"], "no submission was deferred: the faults had no effect"
    assert accepted_ids, "nothing was accepted"
    assert sorted(delivered) == sorted(accepted_ids), "lost or duplicated messages"


def test_concurrent_first_logins_store_one_hash(relays: LocalRelays) -> None:
    result = relays.run_client(FAULT_CLIENT, "logins", "--domain", DOMAIN, "--ca", relays.ca, "--concurrent", "100")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    mailboxes = Path(relays.relay(DOMAIN)["state_dir"]) / "mailboxes"

    same = outcome["same"]
    counts = {text: same["outcomes"].count(text) for text in set(same["outcomes"])}
    print(f"100 concurrent first logins, one password: {counts}")
    assert counts.get("ok", 0) > 0 and counts.get("refused", 0) == 0, counts
    stored = (mailboxes / same["addr"] / "password").read_text().strip()
    assert stored.count("{SHA512-CRYPT}") == 1 and verify_password(same["password"], stored)

    different = outcome["different"]
    print(f"100 concurrent first logins, 100 passwords: {len(different['accepted_passwords'])} accepted")
    assert len(different["accepted_passwords"]) == 1, different["outcomes"]
    stored = (mailboxes / different["addr"] / "password").read_text().strip()
    assert verify_password(different["accepted_passwords"][0], stored)


def test_killed_incoming_filter_between_relays_loses_nothing(relays: LocalRelays, tmp_path: Path) -> None:
    """chat2.test sends to chat.test while chat.test's port 25 milter is killed: chat.test defers
    (4xx), chat2.test keeps the mail queued and delivers it once the milter is back."""
    receiving = Path(relays.relay(DOMAIN)["state_dir"])
    log_before = (receiving / "log" / "postfix.log").read_text(errors="replace")
    result = stream_with_faults(relays, tmp_path, "chat2.test", DOMAIN, [("filtermail-incoming", DOMAIN)], count=40)
    accepted_ids = [message_id for message_id, _ in result["accepted"]]
    log = (receiving / "log" / "postfix.log").read_text(errors="replace")[len(log_before):]
    deferred_at_port_25 = [line for line in log.splitlines() if "milter" in line.lower() and "4.7.1" in line]
    print(f"40 submitted on chat2.test: accepted {len(accepted_ids)}; chat.test deferred "
          f"{len(deferred_at_port_25)} sessions; delivered {len(result['delivered'])}")
    assert result["refused"] == [] and len(accepted_ids) == 40, result
    assert deferred_at_port_25, "chat.test never deferred: the fault had no effect"
    assert sorted(result["delivered"]) == sorted(accepted_ids), "lost or duplicated messages"


def test_hanging_filter_makes_postfix_defer(relays: LocalRelays) -> None:
    """A filtermail that takes connections but never answers (stopped): Postfix waits its milter
    timeout, then defers the session; nothing is accepted unchecked. Continued, it works again."""
    state_dir = Path(relays.relay(DOMAIN)["state_dir"])
    pid = pid_of(state_dir, "filtermail")
    os.kill(pid, signal.SIGSTOP)
    try:
        result = relays.run_client(FAULT_CLIENT, "stream", "--domain", DOMAIN, "--ca", relays.ca,
                                   "--count", "1", "--interval", "0", "--ready", "/dev/null")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.returncode == 0, result.stderr
    stopped = json.loads(result.stdout.strip().splitlines()[-1])
    assert stopped["accepted"] == [] and stopped["refused"] == [], stopped
    assert stopped["deferred"] and all(400 <= code < 500 for code in stopped["deferred"]), stopped
    again = relays.run_client(FAULT_CLIENT, "stream", "--domain", DOMAIN, "--ca", relays.ca,
                              "--count", "1", "--interval", "0", "--ready", "/dev/null")
    assert len(json.loads(again.stdout.strip().splitlines()[-1])["accepted"]) == 1
