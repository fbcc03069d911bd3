"""chatmail-expire: delete old messages and inactive accounts (upstream's daily job).

Rules (days from chatmail.ini):

- an account whose last login (the mtime of its ``password`` file, which last-login tracking sets)
  is older than ``delete_inactive_users_after`` days is deleted with its whole mailbox directory;
- a directory of an address without a password file is not an account: it is removed when it
  holds no files (only empty directories, if any) and has not changed for a day (upstream 1.12,
  "expire empty directories"; the day spares a directory that doveauth is creating right now);
- a message (a file in ``cur/`` or ``new/`` of the inbox or of a ``.Folder``) older than
  ``delete_mails_after`` days is deleted;
- a message larger than 200 000 bytes that the client has seen (it is in ``cur/``) is deleted after
  ``delete_large_after`` days;
- a mailbox still larger than 70 % of ``max_mailbox_size`` loses its oldest messages down to that,
  never one younger than a day (the rule of chatmail-quota-expire, see quota.py).

Age is the file's mtime, size its st_size (the quota rule: the size Dovecot's quota counts). The
job runs while Dovecot writes: files that vanish are skipped, only ``cur/`` and ``new/`` entries are
unlinked (plus the ``maildirsize`` quota cache, so that Dovecot recounts), symlinks are never
followed, and an account is first renamed out of the way (atomically) and then removed.

Like upstream, nothing is deleted without ``--remove``; the default (or ``--dry-run``) prints what
would be deleted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .config import Config, ConfigError, read_config
from .maildir import QUOTA_CACHE_FILE, holds_no_files, last_login, mailbox_dirs, message_files, subdirs
from .quota import messages_to_remove, quota_target_bytes, removal_report

DAY = 86400
LARGE_MESSAGE_SIZE = 200_000
# an account being deleted is renamed to this prefix + random hex first (no "@": not an account)
DELETING_PREFIX = ".deleting-"
DEFAULT_INI = "/usr/local/lib/chatmaild/chatmail.ini"


# --- rules (pure)


@dataclass(frozen=True)
class Cutoffs:
    """Timestamps before which things expire."""

    last_login: float
    message: float
    large_message: float
    unchanged_directory: float

    @classmethod
    def from_config(cls, config: Config, now: float) -> Cutoffs:
        return cls(
            last_login=now - config.delete_inactive_users_after * DAY,
            message=now - config.delete_mails_after * DAY,
            large_message=now - config.delete_large_after * DAY,
            unchanged_directory=now - DAY,
        )

    def account_expired(self, last_login: float | None) -> bool:
        return last_login is not None and last_login < self.last_login

    def message_expired(self, message_dir: str, mtime: float, size: int) -> bool:
        """Whether a file in ``message_dir`` ("cur" or "new") with ``mtime``/``size`` expired."""
        if mtime < self.message:
            return True
        return message_dir == "cur" and size > LARGE_MESSAGE_SIZE and mtime < self.large_message

    def directory_abandoned(self, holds_files: bool, mtime: float) -> bool:
        """Whether a directory of an address without a password file (no account) expired."""
        return not holds_files and mtime < self.unchanged_directory


# --- deleting


class Expiry:
    def __init__(
        self, config: Config, now: float, remove: bool, verbose: bool, out: TextIO
    ) -> None:
        self.config = config
        self.now = now
        self.cutoffs = Cutoffs.from_config(config, now)
        self.quota_target = quota_target_bytes(config.max_mailbox_size)
        self.remove = remove
        self.verbose = verbose
        self.out = out
        self.mailboxes = 0
        self.removed_mailboxes = 0
        self.files = 0
        self.removed_files = 0

    def _report(self, what: Path) -> None:
        if not self.remove:
            print(f"would remove {what}", file=self.out)
        elif self.verbose:
            print(f"removing {what}", file=self.out)

    def _unlink(self, path: Path) -> bool:
        self._report(path)
        if self.remove:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        return True

    def _remove_account(self, mailbox: Path) -> None:
        self._report(mailbox)
        self.removed_mailboxes += 1
        if not self.remove:
            return
        doomed = mailbox.with_name(DELETING_PREFIX + uuid.uuid4().hex)
        try:
            os.rename(mailbox, doomed)  # the account vanishes at once, not file by file
        except FileNotFoundError:
            return
        remove_tree(doomed)

    def expire_mailbox(self, mailbox: Path) -> None:
        self.mailboxes += 1
        login = last_login(mailbox)
        if self.cutoffs.account_expired(login):
            self._remove_account(mailbox)
            return
        if login is None and self._abandoned(mailbox):
            self._remove_account(mailbox)
            return
        removed_any = False
        kept = []
        for message in message_files(mailbox):
            self.files += 1
            if self.cutoffs.message_expired(message.message_dir, message.mtime, message.size):
                if self._unlink(message.path):
                    self.removed_files += 1
                    removed_any = True
            else:
                kept.append(message)
        room_made = 0
        for message in messages_to_remove(kept, self.quota_target, self.now):
            if self._unlink(message.path):
                self.removed_files += 1
                room_made += 1
        if room_made and self.remove:
            print(removal_report(room_made, mailbox), file=sys.stderr)
        if (removed_any or room_made) and self.remove:
            # Dovecot's quota cache would still count the deleted messages; it rebuilds it
            (mailbox / QUOTA_CACHE_FILE).unlink(missing_ok=True)

    def _abandoned(self, directory: Path) -> bool:
        try:
            mtime = directory.lstat().st_mtime
        except FileNotFoundError:
            return False
        return self.cutoffs.directory_abandoned(not holds_no_files(directory), mtime)

    def remove_leftovers(self, mailboxes_dir: Path) -> None:
        """Finish deleting accounts that an interrupted earlier run had renamed."""
        for entry in subdirs(mailboxes_dir):
            if entry.name.startswith(DELETING_PREFIX):
                self._report(Path(entry.path))
                if self.remove:
                    remove_tree(Path(entry.path))

    def summary(self, seconds: float) -> str:
        verb = "Removed" if self.remove else "Would remove"
        return (
            f"{verb} {self.removed_mailboxes} out of {self.mailboxes} mailboxes "
            f"and {self.removed_files} out of {self.files} files in existing mailboxes "
            f"in {seconds:2.2f} seconds"
        )


def remove_tree(path: Path) -> None:
    # rmtree works on directory fds here (shutil.rmtree.avoids_symlink_attacks): a symlink in the
    # tree is unlinked, never followed; errors are files that vanished or appeared meanwhile
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        print(f"could not remove all of {path}; the next run tries again", file=sys.stderr)


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.time) -> int:
    """Expire mailboxes and messages according to chatmail.ini."""
    parser = argparse.ArgumentParser(prog="chatmail-expire", description=main.__doc__)
    parser.add_argument(
        "chatmail_ini",
        nargs="?",
        default=DEFAULT_INI,
        help=f"path of chatmail.ini (default: {DEFAULT_INI})",
    )
    parser.add_argument(
        "--days", type=int, default=0, help="act as if now were this many days earlier"
    )
    parser.add_argument(
        "--maxnum", type=int, default=None, help="look at this many mailboxes at most"
    )
    parser.add_argument("-v", dest="verbose", action="store_true", help="print each removed path")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--remove", action="store_true", help="really delete (default: only print)")
    mode.add_argument(
        "--dry-run", action="store_true", help="only print what would be deleted (the default)"
    )
    args = parser.parse_args(argv)

    try:
        config = read_config(args.chatmail_ini)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    start = time.monotonic()
    expiry = Expiry(
        config,
        now=clock() - args.days * DAY,
        remove=args.remove,
        verbose=args.verbose,
        out=sys.stdout,
    )
    if not config.mailboxes_dir.is_dir():
        print(f"no mailboxes found at: {config.mailboxes_dir}", file=sys.stderr)
    expiry.remove_leftovers(config.mailboxes_dir)
    failed = False
    for mailbox in mailbox_dirs(config.mailboxes_dir)[: args.maxnum]:
        try:
            expiry.expire_mailbox(mailbox)
        except OSError as e:  # one broken mailbox must not keep the others from expiring
            print(f"cannot expire {mailbox}: {e}", file=sys.stderr)
            failed = True
    print(expiry.summary(time.monotonic() - start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
