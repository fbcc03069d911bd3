"""System limits for new accounts (upstream 1.12): doveauth creates no account while the machine
is at its limits (``max_load_1m``, ``min_available_memory``, ``min_free_disk_space``); existing
accounts keep working. A value that cannot be read is left out of the decision (and logged)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .config import Config, size_bytes

log = logging.getLogger(__name__)

MB = 1024 * 1024
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Resources:
    load_1m: float | None
    available_memory: int | None  # bytes
    free_disk_space: int | None  # bytes, for unprivileged users, where the mailboxes are


def limit_refusal(config: Config, resources: Resources) -> str | None:
    """Why no account may be created now, or None. The wording is upstream's log line."""
    if resources.load_1m is not None and resources.load_1m > config.max_load_1m:
        return f"load avg {resources.load_1m:.2f} > {config.max_load_1m:.2f}"
    memory_limit = size_bytes(config.min_available_memory)
    if resources.available_memory is not None and resources.available_memory < memory_limit:
        return f"available memory {resources.available_memory // MB}MB < {memory_limit // MB}MB"
    disk_limit = size_bytes(config.min_free_disk_space)
    if resources.free_disk_space is not None and resources.free_disk_space < disk_limit:
        return f"free disk {resources.free_disk_space // MB}MB < {disk_limit // MB}MB"
    return None


def parse_mem_available(meminfo: str) -> int | None:
    """MemAvailable of /proc/meminfo in bytes (what can be used without swapping)."""
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            fields = rest.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024 if fields[1:] == ["kB"] else int(fields[0])
    return None


def read_resources(mailboxes_dir: Path) -> Resources:
    """The machine's figures now (a few microseconds; read only when an account is created)."""

    def attempt(what: str, reader):
        try:
            return reader()
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable system limit (%s): %s", what, e)
            return None

    def free_disk() -> int:
        st = os.statvfs(mailboxes_dir)
        return st.f_bavail * st.f_frsize

    return Resources(
        load_1m=attempt("load", lambda: os.getloadavg()[0]),
        available_memory=attempt("memory", lambda: parse_mem_available(MEMINFO.read_text())),
        free_disk_space=attempt("disk", free_disk),
    )
