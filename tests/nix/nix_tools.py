"""Running Nix and the Debian mail tools from the tests of tests/nix."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "modules" / "render.nix"
NIX_TIMEOUT = 120


def nix_instantiate() -> str:
    path = shutil.which("nix-instantiate")
    if path is None:
        raise RuntimeError("nix-instantiate is not installed (Debian package nix-bin)")
    return path


def eval_json(expr: str, *, args: list[str] | None = None, cwd: Path = REPO) -> Any:
    """Evaluate a Nix expression strictly and return it as JSON data."""
    proc = subprocess.run(
        [nix_instantiate(), "--eval", "--strict", "--json", *(args or []), "-E", expr],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=NIX_TIMEOUT,
    )
    if proc.returncode != 0:
        raise NixError(proc.stderr)
    return json.loads(proc.stdout)


class NixError(RuntimeError):
    """nix-instantiate failed; the message is its stderr."""


def render(params: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Evaluate modules/render.nix exactly as the harness does: params from a JSON file."""
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps(params))
    return eval_json(
        f"import {RENDER} (builtins.fromJSON (builtins.readFile {params_file}))", cwd=tmp_path
    )
