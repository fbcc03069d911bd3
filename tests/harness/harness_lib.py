"""Driving scripts/local-relay from the tests: bring relays up/down, run clients inside."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL_RELAY = REPO / "scripts" / "local-relay"
SCENARIOS = REPO / "nixos-tests" / "scenarios"
# chat.test and chat2.test as `--relays 2` names them, plus a domain starting with "_".
DOMAINS = ("chat.test", "chat2.test", "_r3.test")
# the privacy contacts of every relay (shown on its privacy and info pages)
PRIVACY_SETTINGS = {"privacy_mail": "privacy@chat.test",
                    "privacy_postal": "Relay Operators <Test> & Co, 1 Harness Road"}
UP_TIMEOUT = 180
CLIENT_TIMEOUT = 300


@dataclass
class LocalRelays:
    state: Path
    description: dict

    @property
    def ca(self) -> str:
        return self.description["ca_cert"]

    def relay(self, domain: str) -> dict:
        return next(r for r in self.description["relays"] if r["domain"] == domain)

    def local_relay(self, *args: str, timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess:
        return run_local_relay("--state", str(self.state), *args, timeout=timeout)

    def run_client(self, script: Path, *args: str) -> subprocess.CompletedProcess:
        """Run a Python client script in the client namespace; its output is printed (shown by
        pytest for failing tests, and with -s)."""
        result = self.local_relay("exec", "--", sys.executable, str(script), *args)
        print(result.stdout + result.stderr)
        return result

    def logs(self) -> str:
        result = self.local_relay("logs", "--tail", "60", timeout=60)
        return result.stdout + result.stderr


def run_local_relay(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LOCAL_RELAY), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def harness_state_dir() -> Path:
    # Not under pytest's tmp (0700 below /tmp/pytest-of-root): service users read files there.
    state = Path(tempfile.mkdtemp(prefix="chatmail-harness-", dir="/var/tmp"))
    state.chmod(0o755)
    return state


def load_local_relay():
    """scripts/local-relay as a module (its file name has no .py)."""
    loader = importlib.machinery.SourceFileLoader("local_relay", str(LOCAL_RELAY))
    spec = importlib.util.spec_from_loader("local_relay", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_relay"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


SCRAPE = r"""
import json, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
samples = (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))
print(json.dumps({name: float(value) for name, _, value in samples}))
"""


def scrape_metrics(netns: str, url: str, timeout: float = 60) -> dict[str, float]:
    """A relay's metrics endpoint, read inside its namespace: sample (with labels) -> value."""
    result = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SCRAPE, url],
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"scraping {url} in {netns} failed: {result.stderr}")
    return json.loads(result.stdout)


# scripts/setup installs Dovecot built with this patch, versioned <Debian version>+chatmail.<hash>
NOTIFY_DELAY_PATCH = REPO / "pkgs" / "dovecot" / "no-notify-delay.patch"


def patched_dovecot_suffix() -> str:
    """The version suffix of the Dovecot packages scripts/setup builds from NOTIFY_DELAY_PATCH:
    `+chatmail.` and the first 8 hex digits of the patch file's SHA-256."""
    return "+chatmail." + hashlib.sha256(NOTIFY_DELAY_PATCH.read_bytes()).hexdigest()[:8]


def installed_dovecot_version(package: str = "dovecot-core") -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                            text=True, timeout=30)
    return result.stdout.strip()
