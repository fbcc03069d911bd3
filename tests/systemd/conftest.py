"""tests/systemd renders the units with tests/nix's helpers (nix_tools)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nix"))
