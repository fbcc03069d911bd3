"""Checks of the Nix files that need no nixpkgs: syntax, the flake's pin, conventions."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from nix_tools import REPO, nix_instantiate

NIX_FILES = sorted(p for p in REPO.rglob("*.nix") if ".git" not in p.parts)


def test_there_are_nix_files():
    names = {str(p.relative_to(REPO)) for p in NIX_FILES}
    assert {"flake.nix", "modules/default.nix", "modules/render.nix",
            "pkgs/chatmaild/default.nix", "nixos-tests/basic.nix"} <= names


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_nix_file_parses(path):
    proc = subprocess.run([nix_instantiate(), "--parse", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_nix_conventions(path):
    text = path.read_text()
    assert not re.search(r"\bwith lib;", text), "use lib.x instead of `with lib;`"
    if path.parts[-2] != "stubs" and "tests" not in path.relative_to(REPO).parts:
        assert "/nix/store/" not in text, "no hard-coded store paths"


def test_flake_lock_pins_nixpkgs():
    lock = json.loads((REPO / "flake.lock").read_text())
    assert lock["version"] == 7
    assert lock["root"] == "root"
    assert lock["nodes"]["root"] == {"inputs": {"nixpkgs": "nixpkgs"}}
    assert lock["nodes"]["nixpkgs"] == {
        "locked": {
            "lastModified": 1783703440,
            "narHash": "sha256-O3/YajjWo001VUIgD8BwaRdSNLUFe7nZ1qV5TwhRBcw=",
            "owner": "NixOS",
            "repo": "nixpkgs",
            "rev": "8f0500b9660505dc3cb647775fe9a978a74b5283",
            "type": "github",
        },
        "original": {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"},
    }


def test_flake_input_matches_lock():
    text = (REPO / "flake.nix").read_text()
    assert 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";' in text
    assert "flake-utils" not in text
