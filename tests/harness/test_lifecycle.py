"""local-relay's own life cycle: up, DNS, status, refusing a second up, down, down --wipe.

Runs a relay of its own (next to the session's relays: several state dirs coexist).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness_lib import UP_TIMEOUT, harness_state_dir, run_local_relay

DOMAIN = "_solo.test"


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def host_postfix_config() -> dict[str, bytes]:
    """The host's own /etc/postfix, which the harness must leave as it is."""
    return {str(path): path.read_bytes() for path in sorted(Path("/etc/postfix").rglob("*"))
            if path.is_file()}


def running_pids(state, relay_dir) -> list[int]:
    pid_files = [*relay_dir.glob("run/*.pid"), relay_dir / "dovecot/run/master.pid",
                 relay_dir / "postfix-queue/pid/master.pid", state / "hub/dnsmasq.pid",
                 state / "hub/named.pid"]
    return [int(path.read_text().split()[0]) for path in pid_files if path.exists()]


def test_up_status_down_wipe() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root")
    state = harness_state_dir()
    prefix = f"cmt{secrets.token_hex(2)}-"
    local_relay = lambda *args: run_local_relay("--state", str(state), *args, timeout=UP_TIMEOUT)
    host_postfix = host_postfix_config()
    try:
        started = time.monotonic()
        up = local_relay("up", "--domains", DOMAIN, "--prefix", prefix)
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"up of one relay took {time.monotonic() - started:.1f}s")
        description = json.loads((state / "relays.json").read_text())
        (relay,) = description["relays"]
        assert relay["domain"] == DOMAIN and relay["ipv4"] == "198.18.0.11"
        assert description["client_netns"] == f"{prefix}client"
        ours = {f"{prefix}hub", f"{prefix}client", relay["netns"]}
        assert ours <= namespaces()
        assert host_postfix_config() == host_postfix

        assert local_relay("status").returncode == 0
        again = local_relay("up", "--domains", DOMAIN, "--prefix", prefix)
        assert again.returncode != 0 and "up already" in again.stderr

        resolved = local_relay("exec", "--", "getent", "hosts", DOMAIN)
        assert resolved.stdout.split()[:2] == ["198.18.0.11", DOMAIN]
        # Unknown names fail at once (NXDOMAIN), not after a resolver timeout.
        started = time.monotonic()
        unknown = local_relay("exec", "--", "getent", "hosts", f"imap.{DOMAIN}")
        assert unknown.returncode == 2 and time.monotonic() - started < 2.0

        pids = running_pids(state, state / "relays" / DOMAIN)
        # doveauth, 2 x filtermail, metadata, turn-credentials, metrics, 2 x mxdeliv, dovecot,
        # postfix, opendkim, newemail, nginx, coturn; dnsmasq and named in the hub
        assert len(pids) == 16, pids
        down = local_relay("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not ours & namespaces()
        assert not any(os.path.exists(f"/etc/netns/{name}") for name in ours)
        assert host_postfix_config() == host_postfix
        assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        assert (state / "relays" / DOMAIN / "log" / "postfix.log").exists()  # logs kept

        assert local_relay("down", "--wipe").returncode == 0
        assert not state.exists()
    finally:
        local_relay("down", "--wipe")
        shutil.rmtree(state, ignore_errors=True)
