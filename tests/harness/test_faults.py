"""Faults lose nothing: a counted stream of encrypted messages while filtermail, then doveauth,
then Dovecot are killed (SIGKILL) and started again the way local-relay starts them. Postfix
defers (4xx) while a daemon is down and delivers what it accepted once it is back; at the end the
mailboxes hold exactly the messages Postfix accepted. And 100 concurrent first logins of one
account store one hash."""

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


def test_killed_daemons_lose_no_accepted_message(relays: LocalRelays, tmp_path: Path) -> None:
    state_dir = Path(relays.relay(DOMAIN)["state_dir"])
    ready = tmp_path / "ready"
    client = subprocess.Popen(
        [sys.executable, str(LOCAL_RELAY), "--state", str(relays.state), "exec", "--", sys.executable,
         str(FAULT_CLIENT), "stream", "--domain", DOMAIN, "--ca", relays.ca, "--count", str(STREAM_COUNT),
         "--interval", str(STREAM_INTERVAL), "--ready", str(ready)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(ready, client, 120)
        for daemon in DAEMONS:
            time.sleep(1.5)
            os.kill(pid_of(state_dir, daemon), signal.SIGKILL)
            print(f"{time.strftime('%H:%M:%S')} killed {daemon}", flush=True)
            time.sleep(DOWN_SECONDS)
            restarted = relays.local_relay("restart", daemon, "--relay", DOMAIN, timeout=120)
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            print(restarted.stdout.strip(), flush=True)
        out, err = client.communicate(timeout=STREAM_COUNT * STREAM_INTERVAL + 180)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    print(err)
    assert client.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    accepted_ids = [message_id for message_id, _ in result["accepted"]]

    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        # what Postfix deferred while Dovecot or doveauth was away: deliver it now
        subprocess.run(["postqueue", "-c", str(state_dir / "postfix"), "-f"], capture_output=True, timeout=30)
        delivered = delivered_message_ids(state_dir, result["recipients"])
        if len(delivered) >= len(accepted_ids) or time.monotonic() > deadline:
            break
        time.sleep(2)
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
