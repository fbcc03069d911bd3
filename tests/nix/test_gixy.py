"""gixy on the rendered nginx.conf, as nixpkgs runs it when it builds the system.

nixpkgs' services.nginx writes nginx.conf with pkgs.writers.writeNginxConfig when
`validateConfigFile` is on (the default), which runs a plain `gixy nginx.conf`: every check, every
severity; any finding fails the build. The same call here, with gixy-ng (scripts/setup installs the
version newer nixpkgs packages as `gixy`), on both texts: the harness's complete nginx.conf from
render.nix, and the nginx.conf nixpkgs writes from the module's virtual hosts (tests/nix/stubs/
nginx.nix writes it as nixpkgs does; that part needs NIXPKGS_LIB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nix_tools import REPO, eval_json, render

GIXY = Path(sys.executable).with_name("gixy")
TOOL_TIMEOUT = 120


def gixy_findings(conf: str, tmp_path: Path) -> list[dict[str, Any]]:
    """gixy's findings on `conf`, run as nixpkgs runs it (the exit status says the same)."""
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    plain = subprocess.run([str(GIXY), str(path)], capture_output=True, text=True,
                           timeout=TOOL_TIMEOUT)
    report = subprocess.run([str(GIXY), "-f", "json", str(path)], capture_output=True, text=True,
                            timeout=TOOL_TIMEOUT)
    findings = json.loads(report.stdout)
    assert (plain.returncode == 0) == (findings == []), plain.stdout + plain.stderr
    return [{key: finding.get(key) for key in ("plugin", "severity", "reason")}
            for finding in findings]


def test_gixy_is_installed():
    assert GIXY.exists(), f"{GIXY}: run scripts/setup (it installs gixy-ng into the venv)"


def test_gixy_flags_what_nixpkgs_would_refuse(tmp_path):
    # the check can fail: a variable proxy_pass without resolver, two servers on one socket
    # without default_server (both were in this project's nginx.conf once)
    conf = """
events {}
http {
  server { listen 127.0.0.1:8443 ssl; server_name a.test; location / { return 404; } }
  server { listen 127.0.0.1:8443 ssl; server_name b.test; location / { return 404; } }
}
stream {
  map $ssl_preread_alpn_protocols $upstream { ~imap 127.0.0.1:993; default 127.0.0.1:8443; }
  server { listen 443; ssl_preread on; proxy_pass $upstream; }
}
"""
    plugins = {finding["plugin"] for finding in gixy_findings(conf, tmp_path)}
    assert {"default_server_flag", "missing_resolver"} <= plugins


@pytest.mark.parametrize("params", [
    {},
    {"discovery": {"alpn": False}},
    {"settings": {"disable_ipv6": True}},
    {"discovery": {"dkim": False, "httpsPort": 9443, "newemailPort": 4000}},
], ids=["default", "alpn-off", "ipv4-only", "other-ports"])
def test_rendered_nginx_conf_passes_gixy(tmp_path, params):
    conf = render({"domain": "chat.example.org", **params}, tmp_path)["discovery"]["nginx"]["conf"]
    assert gixy_findings(conf, tmp_path) == []


NIXPKGS_LIB = os.environ.get("NIXPKGS_LIB")
needs_nixpkgs_lib = pytest.mark.skipif(not NIXPKGS_LIB, reason="NIXPKGS_LIB is not set")


@needs_nixpkgs_lib
@pytest.mark.parametrize("chatmail", [
    {"tls": {"mode": "selfSigned"}},
    {"tls": {"mode": "acme"}},
    {"tls": {"mode": "selfSigned"}, "nginx": {"alpnMultiplexing": False}},
], ids=["selfSigned", "acme", "alpn-off"])
def test_nginx_conf_nixpkgs_writes_passes_gixy(tmp_path, chatmail):
    from test_module import relay  # skips itself without NIXPKGS_LIB

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"services": {"chatmail": relay(**chatmail)}}))
    conf = eval_json(
        f"(import {REPO / 'tests' / 'nix' / 'eval-module.nix'} {{ nixpkgsLib = {NIXPKGS_LIB};"
        f" configFile = {config_file}; }}).summary.nginx.conf"
    )
    assert "server_name chat.example.org www.chat.example.org;" in conf
    assert gixy_findings(conf, tmp_path) == []
