"""scripts/options-table: the README's option table, generated from the declarations.

Needs NIXPKGS_LIB=/path/to/nixpkgs/lib; reported as skipped without it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from nix_tools import REPO, eval_json

NIXPKGS_LIB = os.environ.get("NIXPKGS_LIB")
if not NIXPKGS_LIB:
    print("tests/nix/test_options_table.py: NIXPKGS_LIB is not set; skipped")
    pytest.skip("NIXPKGS_LIB (nixpkgs' lib directory) is not set", allow_module_level=True)


def test_table_lists_every_option_once():
    proc = subprocess.run([str(REPO / "scripts" / "options-table")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NIXPKGS_LIB": NIXPKGS_LIB})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["| Option | Type | Default | Description |", "| --- | --- | --- | --- |"]
    rows = {line.split(" | ")[0].removeprefix("| `").removesuffix("`"): line for line in lines[2:]}
    assert len(rows) == len(lines) - 2
    defaults = eval_json(f"(import {REPO / 'modules' / 'render.nix'} {{ }}).defaults")
    for key in defaults:
        assert f"services.chatmail.settings.{key}" in rows, key
    for name in ("enable", "domain", "package", "tls.mode", "openFirewall", "postfix.main"):
        assert f"services.chatmail.{name}" in rows, name
    assert "services.chatmail.rendered" not in rows  # internal
    assert all(line.count(" | ") == 3 and "{option}" not in line for line in lines)
    assert "| `31457280` |" in rows["services.chatmail.settings.max_message_size"]


def test_readme_table_is_the_generated_one():
    proc = subprocess.run([str(REPO / "scripts" / "options-table")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NIXPKGS_LIB": NIXPKGS_LIB})
    assert proc.returncode == 0, proc.stderr
    readme = (REPO / "README.md").read_text()
    begin, end = "<!-- options-table:begin -->\n", "<!-- options-table:end -->\n"
    shown = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert shown == proc.stdout, (
        "README.md's option table is stale: run "
        "NIXPKGS_LIB=... scripts/options-table --update README.md")
