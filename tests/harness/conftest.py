"""Session fixture: real relays in network namespaces via scripts/local-relay (needs root).

The relays run the configuration modules/render.nix renders, with real Postfix, Dovecot and the
chatmaild daemons from the venv. When a test that uses them fails, the daemon logs are attached to
its report.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from typing import Iterator

import pytest

from harness_lib import (
    DOMAINS,
    PRIVACY_SETTINGS,
    UP_TIMEOUT,
    LocalRelays,
    harness_state_dir,
    run_local_relay,
)


@pytest.fixture(scope="session")
def relays() -> Iterator[LocalRelays]:
    if os.geteuid() != 0:
        pytest.fail("tests/harness needs root (network namespaces, Postfix, Dovecot)")
    state = harness_state_dir()
    prefix = f"cmt{secrets.token_hex(2)}-"
    try:
        up = run_local_relay("up", "--state", str(state), "--prefix", prefix,
                             "--domains", ",".join(DOMAINS),
                             *[f"--setting={key}={value}" for key, value in PRIVACY_SETTINGS.items()],
                             timeout=UP_TIMEOUT)
        print(up.stdout + up.stderr)
        if up.returncode != 0:
            pytest.fail(f"local-relay up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        description = json.loads((state / "relays.json").read_text())
        yield LocalRelays(state, description)
    finally:
        down = run_local_relay("down", "--state", str(state), "--wipe", timeout=120)
        if down.returncode != 0:
            print(down.stdout + down.stderr, file=sys.stderr)
        shutil.rmtree(state, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    harness = getattr(item, "funcargs", {}).get("relays")
    if report.when == "call" and report.failed and isinstance(harness, LocalRelays):
        report.sections.append(("relay daemon logs (local-relay logs --tail 60)", harness.logs()))
