"""README's commands on a new machine, and on a host that runs a Postfix of its own.

A host that ran the harness before hides what a new machine lacks (a configured main.cf once hid
that `local-relay up` needed one). tests/harness/fresh-host takes that state away in a private
mount namespace (no /etc/postfix/main.cf, no vmail user, no /etc/netns), then twice runs
scripts/setup, `local-relay up`, the basic scenario (encrypted mail through the relay) and `down`,
and lists what was written below /etc.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

from harness_lib import REPO, harness_state_dir

FRESH_HOST = REPO / "tests" / "harness" / "fresh-host"
# What setup may write below /etc (useradd/groupadd and their backups); the harness itself writes
# only /etc/netns/<its namespaces>, which `down` removes again.
SETUP_WRITES = {f"/etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow")
                for suffix in ("", "-")} | {"/etc/.pwd.lock", "/etc/netns"}


def section(output: str, start: str, end: str) -> str:
    assert start in output, f"no {start!r} in:\n{output}"
    return output.split(start, 1)[1].split(end, 1)[0]


@pytest.mark.parametrize("host", ["new", "host-postfix"])
def test_setup_and_relay_on_a_new_machine(host: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (mount namespace, network namespaces)")
    state = harness_state_dir()
    args = [str(FRESH_HOST), str(state), f"cmf{secrets.token_hex(2)}-", "_fresh.test"]
    try:
        result = subprocess.run(args + (["--host-postfix"] if host == "host-postfix" else []),
                                capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output
    assert "setup: created user vmail" in section(output, "== round 1: setup", "== round 1: local-relay")
    assert "setup: nothing to do" in section(output, "== round 2: setup", "== round 2: local-relay")
    for round in (1, 2):
        mail = section(output, f"== round {round}: encrypted mail", "== ")
        assert "OpenPGP/MIME message submitted on 587" in mail and ": OK in" in mail, output
    if host == "host-postfix":
        assert "== the host's Postfix still runs" in output
    written = set(section(output, "== written below /etc\n", "== exit").split())
    assert written <= SETUP_WRITES, f"written below /etc besides the user database: {written - SETUP_WRITES}"


@pytest.mark.parametrize("venv", ["/tmp/chatmail-venv-{}", "/var/tmp/chatmail-venv-{}/venv"])
def test_setup_refuses_a_venv_the_units_cannot_see(venv: str) -> None:
    venv = venv.format(secrets.token_hex(3))
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup")], capture_output=True, text=True,
                            env={**os.environ, "CHATMAIL_VENV": venv}, timeout=60)
    assert result.returncode == 1
    assert "PrivateTmp" in result.stderr and "CHATMAIL_VENV=/opt/" in result.stderr
    assert not os.path.exists(venv)
