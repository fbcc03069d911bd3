"""Durable, atomic file writes for small state files (tokens, queue entries, passwords).

A reader sees either the old or the new content of a file, never a partial one, and a written
file survives a crash of the process or the machine once the write call has returned.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# suffix of the temporary files; a crash can leave one behind, readers of a directory skip them
TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: write a temp file beside it, fsync, rename, fsync dir."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object stored at ``path``; {} if the file is missing or not a JSON object.

    Other read errors (permissions, I/O) propagate: treating them as "empty" would let the next
    write destroy the state.
    """
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        # only write_atomic writes these files, so this is damage from outside: start afresh
        log.warning("ignoring unreadable state file %s: %s", path, e)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring state file %s: not a JSON object", path)
        return {}
    return data


def write_json_object(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True).encode())
