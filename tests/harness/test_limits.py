"""Limits under load (upstream 1.12) against real Postfix, Dovecot and doveauth: what a client
sees beyond max_smtp_connections, max_imap_connections and the system limits for new accounts.

Runs one relay of its own with small limits (max_imap_connections = 2, max_smtp_connections = 5,
so one client address may hold one SMTP connection per port).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness_lib import UP_TIMEOUT, harness_state_dir, run_local_relay, scrape_metrics

DOMAIN = "_limits.test"
CLIENT = Path(__file__).resolve().parent / "limits_client.py"
STEP_TIMEOUT = 120


@dataclass
class LimitsRelay:
    state: Path

    @property
    def relay_dir(self) -> Path:
        return self.state / "relays" / DOMAIN

    @property
    def description(self) -> dict:
        return json.loads((self.state / "relays.json").read_text())["relays"][0]

    def client(self, *args: str) -> dict:
        result = run_local_relay("--state", str(self.state), "exec", "--", sys.executable, str(CLIENT),
                                 *args[:1], "--domain", DOMAIN, "--ca", str(self.state / "ca" / "ca.pem"),
                                 *args[1:], timeout=STEP_TIMEOUT)
        assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}{result.stderr}"
        return json.loads(result.stdout.splitlines()[-1])

    def log(self, name: str) -> str:
        return (self.relay_dir / "log" / f"{name}.log").read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        return scrape_metrics(self.description["netns"], self.description["metrics_url"])


@pytest.fixture(scope="module")
def relay() -> Iterator[LimitsRelay]:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces, Postfix, Dovecot)")
    state = harness_state_dir()
    try:
        up = run_local_relay("--state", str(state), "up", "--domains", DOMAIN,
                             "--prefix", f"cmk{secrets.token_hex(2)}-",
                             "--setting", "max_imap_connections=2", "--setting", "max_smtp_connections=5",
                             timeout=UP_TIMEOUT)
        assert up.returncode == 0, up.stdout + up.stderr
        yield LimitsRelay(state)
    finally:
        run_local_relay("--state", str(state), "down", "--wipe", timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("port", [587, 465])
def test_one_client_gets_a_fifth_of_max_smtp_connections(relay: LimitsRelay, port: int) -> None:
    replies = relay.client("smtp", "--port", str(port), "--connections", "2")["replies"]
    assert replies[0] == [220, "EHLO 250"], replies
    assert replies[1][0] == 421 and "too many connections" in replies[1][1], replies
    # the first one closed: the next is welcome again
    assert relay.client("smtp", "--port", str(port), "--connections", "1")["replies"] == [[220, "EHLO 250"]]


def test_logins_beyond_max_imap_connections_are_dropped_until_a_session_ends(relay: LimitsRelay) -> None:
    result = relay.client("imap", "--sessions", "3")
    assert result["sessions"][:2] == ["logged in", "logged in"], result
    assert result["sessions"][2] != "logged in", result
    assert result["after_logout"] == "logged in", result
    assert "service(imap): process_limit (2) reached" in relay.log("dovecot")


def test_no_new_accounts_below_min_free_disk_space_but_existing_ones_log_in(relay: LimitsRelay) -> None:
    existing = (f"e{secrets.token_hex(4)}@{DOMAIN}", secrets.token_hex(8))
    assert relay.client("login", *existing) == {"logged_in": True}
    before = relay.metrics()
    ini = relay.relay_dir / "chatmail.ini"
    original = ini.read_text()
    # the operator's edit: 1 PiB of free disk space wanted, then doveauth restarted
    ini.write_text(original.replace("min_free_disk_space = 1G", "min_free_disk_space = 1048576G"))
    assert ini.read_text() != original
    try:
        restart = run_local_relay("--state", str(relay.state), "restart", "doveauth", timeout=STEP_TIMEOUT)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        new = f"n{secrets.token_hex(4)}@{DOMAIN}"
        refused = relay.client("login", new, secrets.token_hex(8))
        assert refused["logged_in"] is False and "LoginError" in refused["error"], refused
        assert not (relay.relay_dir / "mailboxes" / new).exists()
        assert relay.client("login", *existing) == {"logged_in": True}
        assert "registration rejected: free disk" in relay.log("doveauth")
        after = relay.metrics()
        assert after["rejected_registrations"] >= before["rejected_registrations"] + 1
    finally:
        ini.write_text(original)
        run_local_relay("--state", str(relay.state), "restart", "doveauth", timeout=STEP_TIMEOUT)
    assert relay.client("login", f"n{secrets.token_hex(4)}@{DOMAIN}", secrets.token_hex(8)) == {"logged_in": True}
