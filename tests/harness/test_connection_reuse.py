"""Relay-to-relay TLS connections are reused (render.nix: smtp_tls_connection_reuse through
tlsproxy, every destination cached), and a cached connection the other relay has closed costs a
new connection, not a deferred message.

Two relays of their own, the sender's idle-connection limits raised from 2 s to 60 s through the
main.cf escape hatch, so that what is checked does not depend on how fast this machine is.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from harness_lib import SCENARIOS, UP_TIMEOUT, LocalRelays, harness_state_dir, run_local_relay

SENDER, RECEIVER = "reuse-a.test", "reuse-b.test"
LONG_CACHE = {"smtp_connection_cache_time_limit": "60s", "connection_cache_ttl_limit": "60s"}


@pytest.fixture(scope="module")
def pair() -> Iterator[LocalRelays]:
    state = harness_state_dir()
    params = state / "params.json"
    params.write_text(json.dumps({SENDER: {"postfixMain": LONG_CACHE}}))
    try:
        up = run_local_relay("up", "--state", str(state), "--prefix", f"cmr{secrets.token_hex(2)}-",
                             "--domains", f"{SENDER},{RECEIVER}", "--params", str(params), timeout=UP_TIMEOUT)
        assert up.returncode == 0, up.stdout + up.stderr
        yield LocalRelays(state, json.loads((state / "relays.json").read_text()))
    finally:
        run_local_relay("down", "--state", str(state), "--wipe", timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def send(pair: LocalRelays, count: int) -> None:
    result = pair.run_client(SCENARIOS / "idle.py", "--domain", SENDER, "--to", RECEIVER,
                             "--count", str(count), "--ca", pair.ca)
    assert result.returncode == 0, result.stdout + result.stderr


def deliveries(pair: LocalRelays) -> list[str]:
    """The sender relay's log lines of deliveries to the receiver (sent or not)."""
    log = Path(pair.relay(SENDER)["state_dir"]) / "log" / "postfix.log"
    return [line for line in log.read_text().splitlines()
            if f"relay={RECEIVER}[" in line and "status=" in line]


def restart_postfix(pair: LocalRelays, domain: str) -> None:
    relay = pair.relay(domain)
    config = Path(relay["state_dir"]) / "postfix"
    for action in ("stop", "start"):
        subprocess.run(["ip", "netns", "exec", relay["netns"], "postfix", "-c", str(config), action],
                       check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def test_second_message_goes_over_the_first_ones_tls_connection(pair: LocalRelays) -> None:
    send(pair, 3)
    lines = deliveries(pair)
    assert len(lines) == 3 and all("status=sent" in line for line in lines), lines
    # Postfix counts the uses of a reused connection; the first message opened it
    assert "conn_use=" not in lines[0] and "conn_use=2," in lines[1] and "conn_use=3," in lines[2], lines
    log = (Path(pair.relay(SENDER)["state_dir"]) / "log" / "postfix.log").read_text()
    assert re.search(r"/tlsproxy\[\d+\]: CONNECT to \[[\d.]+\]:25", log), "no TLS through tlsproxy"


def test_a_cached_connection_the_peer_closed_costs_a_new_connection_not_a_deferral(pair: LocalRelays) -> None:
    send(pair, 1)  # a connection in the sender's cache
    before = len(deliveries(pair))
    restart_postfix(pair, RECEIVER)  # its smtpd processes, and with them the connection, are gone
    send(pair, 2)  # idle.py waits for each message's EXISTS (bounded): delivered at once
    after = deliveries(pair)[before:]
    assert len(after) == 2 and all("status=sent" in line for line in after), after
    assert "conn_use=" not in after[0] and "conn_use=2," in after[1], after
