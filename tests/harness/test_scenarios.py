"""The client scenarios of nixos-tests/scenarios against the local relays."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness_lib import SCENARIOS, LocalRelays


def assert_ok(result, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}{result.stderr}"
    assert ": OK in" in result.stdout, f"{what} printed no verdict:\n{result.stdout}"


@pytest.mark.parametrize("domain", ["chat.test", "_r3.test"])
def test_basic(relays: LocalRelays, domain: str) -> None:
    result = relays.run_client(SCENARIOS / "basic.py", "--domain", domain, "--ca", relays.ca)
    assert_ok(result, f"basic.py on {domain}")


@pytest.mark.parametrize("first,second", [("chat.test", "chat2.test"), ("chat2.test", "_r3.test")])
def test_federation(relays: LocalRelays, first: str, second: str) -> None:
    result = relays.run_client(SCENARIOS / "federation.py", "--from", first, "--to", second,
                               "--ca", relays.ca)
    assert_ok(result, f"federation.py {first} <-> {second}")


@pytest.mark.parametrize("source,target", [("chat.test", "chat.test"), ("chat.test", "chat2.test")])
def test_idle(relays: LocalRelays, source: str, target: str) -> None:
    # every delivered message reaches an IDLE session as EXISTS; how soon is the benchmark's
    # business (scripts/bench: idle_notification_p50_ms), the Dovecot build test_dovecot_package's
    result = relays.run_client(SCENARIOS / "idle.py", "--domain", source, "--to", target, "--ca", relays.ca)
    assert_ok(result, f"idle.py {source} -> {target}")
    assert "250 → EXISTS (ms): " in result.stdout, result.stdout


def test_nocreate(relays: LocalRelays, tmp_path: Path) -> None:
    domain = "chat2.test"
    nocreate = Path(relays.relay(domain)["nocreate_file"])
    accounts = tmp_path / "accounts.json"
    common = ["--domain", domain, "--accounts", str(accounts), "--ca", relays.ca]
    assert_ok(relays.run_client(SCENARIOS / "nocreate.py", "prepare", *common), "nocreate prepare")
    nocreate.touch()
    try:
        assert_ok(relays.run_client(SCENARIOS / "nocreate.py", "check", *common), "nocreate check")
    finally:
        nocreate.unlink()
    # The check can fail: without the file, the fresh address is created and `check` says so.
    refused = relays.run_client(SCENARIOS / "nocreate.py", "check", *common)
    assert refused.returncode == 1 and "was created although" in refused.stderr, refused.stderr


def test_status_reports_every_daemon(relays: LocalRelays) -> None:
    result = relays.local_relay("status", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for domain in relays.description["relays"]:
        line = next(line for line in result.stdout.splitlines() if line.startswith(domain["domain"]))
        for daemon in ("postfix", "dovecot", "doveauth", "filtermail", "filtermail-incoming"):
            assert f"{daemon} running" in line, line
