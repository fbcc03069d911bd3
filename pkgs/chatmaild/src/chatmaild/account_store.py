"""Accounts on disk: reading (cached), creating (atomic, locked) and last-login tracking.

Layout (upstream's): ``<mailboxes_dir>/<addr>/password`` holds the hash; its mtime is the UTC day
of the last login; ``enforceE2EEincoming`` is created with the account.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from .accounts import InvalidAddress, Mailbox, day_timestamp, get_mailbox
from .config import Config

log = logging.getLogger(__name__)

# cached entries; an entry here is ~0.9 KB and doveauth keeps a reply cache of the same size, so
# 10^4 entries keep its RSS below ~35 MB with 10^5 accounts (at 2 * 10^4 it reached 44 MB)
CACHE_MAX_ENTRIES = 10_000


class CreationFailed(Exception):
    """The account could not be written (I/O error, path escaping mailboxes_dir, …)."""


class Account:
    """A stored account: address, mailbox and password hash."""

    __slots__ = ("mailbox", "password_hash")

    def __init__(self, mailbox: Mailbox, password_hash: str) -> None:
        self.mailbox = mailbox
        self.password_hash = password_hash


def _open_dir_nofollow(path: Path, dir_fd: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _read_password(maildir_fd: int) -> str:
    """The stored hash, or "" if there is none yet."""
    try:
        fd = os.open("password", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=maildir_fd)
    except FileNotFoundError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read().decode("ascii", "replace").strip()


def _write_password_atomically(maildir_fd: int, password_hash: str) -> None:
    tmp_name = f"password.tmp.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=maildir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(password_hash.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp_name, "password", src_dir_fd=maildir_fd, dst_dir_fd=maildir_fd)
    except BaseException:
        try:
            os.unlink(tmp_name, dir_fd=maildir_fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(maildir_fd)  # make the rename itself durable


class AccountStore:
    """Lookups are synchronous and cheap (one stat on a cache hit); creation is blocking work
    meant for a worker thread (see :meth:`create`)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # addr -> (inode, mtime_ns, account, password path): valid while the file keeps both
        self._cache: dict[str, tuple[int, int, Account, str]] = {}

    def mailbox(self, addr: str) -> Mailbox | None:
        try:
            return get_mailbox(self.config, addr)
        except InvalidAddress:
            return None

    @staticmethod
    def _really_inside(mailbox: Mailbox) -> bool:
        """Whether the maildir is a real directory, not a symlink: a planted symlink must not make
        doveauth serve a password file from elsewhere. Its name is a single path component
        (get_mailbox), so a real directory there lies directly inside mailboxes_dir; one lstat()
        instead of resolving both paths (a cache miss costs half as much)."""
        try:
            return stat.S_ISDIR(os.lstat(mailbox.maildir).st_mode)
        except OSError:
            return False

    def lookup(self, addr: str) -> Account | None:
        """The stored account for ``addr``, or None if it does not exist or is not valid."""
        cached = self._cache.get(addr)
        if cached is not None:
            # hot path: the address was checked when it was cached; one stat() tells if it is fresh
            ino, mtime_ns, account, password_path = cached
            try:
                st = os.stat(password_path)
            except FileNotFoundError:
                del self._cache[addr]
                return None
            if st.st_ino == ino and st.st_mtime_ns == mtime_ns:
                return account
        mailbox = self.mailbox(addr)
        if mailbox is None or not self._really_inside(mailbox):
            return None
        password_path = str(mailbox.password_path)
        try:
            st = os.stat(password_path)
            with open(password_path, "rb") as f:
                password_hash = f.read().decode("ascii", "replace").strip()
        except FileNotFoundError:
            self._cache.pop(addr, None)
            return None
        if not password_hash:
            log.error("empty password file for %s", addr)
            return None
        account = Account(mailbox, password_hash)
        if len(self._cache) >= CACHE_MAX_ENTRIES and addr not in self._cache:
            # drop the oldest entry (dicts keep insertion order)
            del self._cache[next(iter(self._cache))]
        self._cache[addr] = (st.st_ino, st.st_mtime_ns, account, password_path)
        return account

    def create(self, mailbox: Mailbox, hash_new_password: Callable[[], str]) -> str:
        """Create the account unless it exists; return the hash that is stored afterwards.

        Blocking (hashing, fsync): run it in a worker thread. Safe against concurrent creators in
        this and other processes: the maildir is flock()ed while the password file is checked and
        written, so exactly one hash is ever stored and later creators get that one.
        """
        base = self.config.mailboxes_dir
        try:
            base.mkdir(parents=True, exist_ok=True)
            base_fd = _open_dir_nofollow(base.resolve())
        except OSError as e:
            raise CreationFailed(f"mailboxes_dir {base}: {e}") from e
        try:
            name = mailbox.maildir.name
            # get_mailbox() allows only a single, harmless path component; check anyway, so no
            # address can ever reach outside mailboxes_dir
            if mailbox.maildir.parent != base or name in ("", ".", "..") or "/" in name:
                raise CreationFailed(f"{mailbox.addr!r} would leave mailboxes_dir")
            try:
                os.mkdir(name, 0o700, dir_fd=base_fd)
            except FileExistsError:
                pass
            try:
                maildir_fd = _open_dir_nofollow(Path(name), dir_fd=base_fd)
            except OSError as e:
                # ELOOP/ENOTDIR: a symlink or file sits where the maildir should be
                raise CreationFailed(f"cannot open maildir of {mailbox.addr}: {e}") from e
        finally:
            os.close(base_fd)
        try:
            fcntl.flock(maildir_fd, fcntl.LOCK_EX)
            stored = _read_password(maildir_fd)
            if stored:
                return stored
            password_hash = hash_new_password()
            _write_password_atomically(maildir_fd, password_hash)
            os.close(
                os.open("enforceE2EEincoming", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=maildir_fd)
            )
            log.info("created account %s", mailbox.addr)
            return password_hash
        except OSError as e:
            raise CreationFailed(f"cannot write account {mailbox.addr}: {e}") from e
        finally:
            os.close(maildir_fd)  # also releases the lock

    def record_login(self, addr: str, timestamp: int) -> bool:
        """Set the password file's mtime to the day of ``timestamp`` (upstream's last-login
        tracking: day granularity touches the file at most once a day and leaks less)."""
        mailbox = self.mailbox(addr)
        if mailbox is None:
            return False
        day = day_timestamp(timestamp)
        try:
            st = os.stat(mailbox.password_path)
            if int(st.st_mtime) != day:
                os.utime(mailbox.password_path, (day, day))
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.error("cannot record login of %s: %s", addr, e)
            return False
        return True

    def addresses(self) -> list[str]:
        """All account addresses (directories with a valid address as name). Blocking."""
        try:
            with os.scandir(self.config.mailboxes_dir) as entries:
                return [e.name for e in entries if self.mailbox(e.name) is not None and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
