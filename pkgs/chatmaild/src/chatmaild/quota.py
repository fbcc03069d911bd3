"""chatmail-quota-expire: make room in a mailbox by removing its oldest messages (upstream 1.10).

Usage: ``chatmail-quota-expire TARGET MAILBOX_PATH``

Dovecot runs it as its quota-warning script when a delivery takes a mailbox over
``QUOTA_TRIGGER_PERCENT`` of ``max_mailbox_size`` (modules/render.nix); the daily
``chatmail-expire`` applies the same rule. TARGET is the size to get down to: a number of megabytes
(upstream's argument) or a size with a K/M/G/T suffix.

Rules: messages are removed oldest first until the mailbox holds at most TARGET; a message
younger than ``KEEP_RECENT_SECONDS`` is never removed (a mailbox full of recent mail means its
owner's devices are not fetching, and the quota-full bounce is the signal they need). What lies
between the trigger and 100 % stays free, so the next message still fits and its sender gets no
bounce. Sizes are the ones Dovecot's maildir quota counts (``MessageFile.quota_size``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import size_bytes
from .maildir import QUOTA_CACHE_FILE, MessageFile, message_files

QUOTA_TRIGGER_PERCENT = 75
QUOTA_TARGET_PERCENT = 70
KEEP_RECENT_SECONDS = 86400


# --- rules (pure)


def quota_target_bytes(max_mailbox_size: str) -> int:
    return size_bytes(max_mailbox_size) * QUOTA_TARGET_PERCENT // 100


def messages_to_remove(messages: Iterable[MessageFile], target_bytes: int, now: float) -> list[MessageFile]:
    """The oldest messages whose removal brings the total to ``target_bytes`` or below, never one
    younger than KEEP_RECENT_SECONDS (then as many old ones as there are)."""
    by_age = sorted(messages, key=lambda m: (m.mtime, m.path))
    total = sum(m.quota_size for m in by_age)
    removed = []
    for message in by_age:
        if total <= target_bytes or message.mtime > now - KEEP_RECENT_SECONDS:
            break
        removed.append(message)
        total -= message.quota_size
    return removed


def removal_report(count: int, mailbox: Path) -> str:
    # upstream's log line (its mtail program counts it; so does chatmail-metrics)
    return f"quota-expire: removed {count} message(s) from {mailbox.name}"


# --- the mailbox on disk


def make_room(mailbox: Path, target_bytes: int, now: float) -> int:
    """Remove what messages_to_remove chooses; the number of files removed. Dovecot's quota
    cache is dropped afterwards, so that it counts the mailbox anew."""
    removed = 0
    for message in messages_to_remove(message_files(mailbox), target_bytes, now):
        try:
            message.path.unlink()
        except FileNotFoundError:
            continue  # expunged meanwhile: room made all the same
        removed += 1
    if removed:
        (mailbox / QUOTA_CACHE_FILE).unlink(missing_ok=True)
    return removed


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.time) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: chatmail-quota-expire TARGET MAILBOX_PATH  (TARGET in MB, or e.g. 700K)", file=sys.stderr)
        return 2
    try:
        target_bytes = size_bytes(args[0])
    except ValueError as e:
        print(f"chatmail-quota-expire: {e}", file=sys.stderr)
        return 2
    mailbox = Path(args[1])
    try:
        removed = make_room(mailbox, target_bytes, clock())
    except OSError as e:
        print(f"chatmail-quota-expire: {mailbox}: {e}", file=sys.stderr)
        return 1
    if removed:
        print(removal_report(removed, mailbox), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
