"""Reading the maildirs: accounts, their message files, Dovecot's quota sizes.

Scans run while Dovecot writes: files that vanish are skipped, and symlinks are never followed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MESSAGE_DIRS = ("cur", "new")
PASSWORD_FILE = "password"
# Dovecot's maildir quota cache; removing it makes Dovecot count the mailbox anew
QUOTA_CACHE_FILE = "maildirsize"
# Dovecot's maildir file names carry the size its quota counts: "<time>.<id>,S=<size>,W=…"
_QUOTA_SIZE_RE = re.compile(r",S=([0-9]+)")


@dataclass(frozen=True)
class MessageFile:
    path: Path
    message_dir: str  # "cur" or "new"
    mtime: float
    size: int

    @property
    def quota_size(self) -> int:
        """The size Dovecot's maildir quota counts: S= of the file name, else the file's size."""
        match = _QUOTA_SIZE_RE.search(self.path.name)
        return int(match.group(1)) if match else self.size


def subdirs(path: Path) -> list[os.DirEntry[str]]:
    """Real subdirectories (not symlinks) of ``path``; [] if it vanished."""
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def mailbox_dirs(mailboxes_dir: Path) -> list[Path]:
    """The account directories (names containing "@"), sorted."""
    return sorted(Path(e.path) for e in subdirs(mailboxes_dir) if "@" in e.name)


def last_login(mailbox: Path) -> float | None:
    """The mtime of the account's password file (its last-login day); None without one."""
    try:
        st = (mailbox / PASSWORD_FILE).lstat()
    except FileNotFoundError:
        return None
    return st.st_mtime if stat.S_ISREG(st.st_mode) else None


def message_files(mailbox: Path) -> Iterator[MessageFile]:
    """The messages of the inbox and of every Maildir++ folder (``.Name``) of ``mailbox``."""
    folders = [mailbox] + [Path(e.path) for e in subdirs(mailbox) if e.name.startswith(".")]
    for folder in folders:
        for message_dir in subdirs(folder):
            if message_dir.name not in MESSAGE_DIRS:
                continue
            try:
                with os.scandir(message_dir.path) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # Dovecot moved or expunged it meanwhile
                        if stat.S_ISREG(st.st_mode):
                            yield MessageFile(
                                Path(entry.path), message_dir.name, st.st_mtime, st.st_size
                            )
            except FileNotFoundError:
                continue


def holds_no_files(directory: Path) -> bool:
    """Whether ``directory`` holds nothing but (possibly nested) empty directories."""
    try:
        with os.scandir(directory) as entries:
            return all(e.is_dir(follow_symlinks=False) and holds_no_files(Path(e.path)) for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return True
