"""chatmail-expire: the expiry rules and the job on a maildir tree with backdated files."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatmaild import expire
from chatmaild.config import Config
from chatmaild.expire import DAY, DELETING_PREFIX, LARGE_MESSAGE_SIZE, Cutoffs, Expiry, main

NOW = 1_750_000_000.0
LARGE = LARGE_MESSAGE_SIZE + 1


# --- rules


@pytest.fixture
def cutoffs(example_config: Config) -> Cutoffs:
    # defaults: delete_mails_after 20, delete_large_after 7, delete_inactive_users_after 90
    return Cutoffs.from_config(example_config, NOW)


def test_accounts_expire_after_their_last_login(cutoffs: Cutoffs) -> None:
    assert cutoffs.account_expired(NOW - 91 * DAY)
    assert not cutoffs.account_expired(NOW - 89 * DAY)
    assert not cutoffs.account_expired(None)  # no password file: never


@pytest.mark.parametrize("message_dir", ["cur", "new"])
def test_messages_expire_after_delete_mails_after(cutoffs: Cutoffs, message_dir: str) -> None:
    assert cutoffs.message_expired(message_dir, NOW - 21 * DAY, 10)
    assert not cutoffs.message_expired(message_dir, NOW - 19 * DAY, 10)


def test_large_seen_messages_expire_after_delete_large_after(cutoffs: Cutoffs) -> None:
    assert cutoffs.message_expired("cur", NOW - 8 * DAY, LARGE)
    assert not cutoffs.message_expired("cur", NOW - 8 * DAY, LARGE_MESSAGE_SIZE)
    assert not cutoffs.message_expired("cur", NOW - 6 * DAY, LARGE)
    # not yet seen by a client (still in new/): only the general rule applies
    assert not cutoffs.message_expired("new", NOW - 8 * DAY, LARGE)


# --- the job


def write(path: Path, age_days: float, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    mtime = NOW - age_days * DAY
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def tree(example_config: Config, tmp_path: Path) -> dict[str, set[Path]]:
    """A mailboxes_dir; returns the files that must go and the files that must stay."""
    base = example_config.mailboxes_dir
    outside = tmp_path / "outside"
    gone: set[Path] = set()
    kept: set[Path] = set()

    active = base / "active123@chat.example.org"
    kept |= {
        write(active / "password", 1),
        write(active / "cur" / "fresh", 1),
        write(active / "cur" / "large-fresh", 6, LARGE),
        write(active / "new" / "large-unseen", 8, LARGE),
        write(active / "tmp" / "being-delivered", 30),
        write(active / "dovecot.index", 30),
        write(active / "junk" / "cur" / "not-a-folder", 30),
    }
    gone |= {
        write(active / "cur" / "old", 21),
        write(active / "new" / "old", 21),
        write(active / "cur" / "large-seen", 8, LARGE),
        write(active / ".Sent" / "cur" / "old", 21),
        write(active / "maildirsize", 1),  # quota cache, rebuilt by Dovecot
    }

    # symlinks out of the tree are never followed
    kept |= {write(outside / "old-message", 30), write(outside / "folder" / "cur" / "old", 30)}
    (active / "cur" / "link").symlink_to(outside / "old-message")
    (active / ".Evil").symlink_to(outside / "folder")
    kept.add(active / "cur" / "link")

    inactive = base / "inactive1@chat.example.org"
    gone |= {write(inactive / "password", 91), write(inactive / "cur" / "fresh", 1)}

    nopassword = base / "nopasswd1@chat.example.org"
    kept.add(write(nopassword / "cur" / "fresh", 1))
    gone.add(write(nopassword / "cur" / "old", 21))

    kept.add(write(outside / "linked" / "password", 200))
    (base / "linked123@chat.example.org").symlink_to(outside / "linked")

    kept.add(write(base / "pending_notifications" / "0123", 30))
    return {"gone": gone, "kept": kept}


def all_paths(root: Path) -> set[Path]:
    """Every file and symlink below ``root`` (symlinks not followed)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        found |= {Path(dirpath, name) for name in filenames}
        found |= {Path(dirpath, d) for d in dirnames if Path(dirpath, d).is_symlink()}
    return found


def run(config: Config, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main([str(config.inipath), *args], clock=lambda: NOW) == 0
    return capsys.readouterr().out


def test_remove_deletes_exactly_the_expired(
    example_config: Config,
    tree: dict[str, set[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = all_paths(tmp_path)
    assert tree["gone"] | tree["kept"] <= before
    out = run(example_config, "--remove", capsys=capsys)
    after = all_paths(tmp_path)
    assert after & tree["gone"] == set()
    assert after == before - tree["gone"]
    assert not (example_config.mailboxes_dir / "inactive1@chat.example.org").exists()
    assert "Removed 1 out of 3 mailboxes and 5 out of 9 files" in out


def test_dry_run_lists_what_remove_would_delete_and_deletes_nothing(
    example_config: Config,
    tree: dict[str, set[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = all_paths(tmp_path)
    for args in ([], ["--dry-run"]):
        out = run(example_config, *args, capsys=capsys)
        assert all_paths(tmp_path) == before
        listed = {Path(line.removeprefix("would remove ")) for line in out.splitlines()[:-1]}
        account = example_config.mailboxes_dir / "inactive1@chat.example.org"
        assert listed == {account} | {p for p in tree["gone"] if account not in p.parents} - {
            account.parent / "active123@chat.example.org" / "maildirsize"
        }
        assert out.splitlines()[-1].startswith("Would remove 1 out of 3 mailboxes")


def test_remove_and_dry_run_exclude_each_other(example_config: Config) -> None:
    with pytest.raises(SystemExit):
        main([str(example_config.inipath), "--remove", "--dry-run"])


def test_days_and_maxnum(
    example_config: Config,
    tree: dict[str, set[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # two days earlier, the 21-day-old messages were 19 days old, the 8-day-old large one 6 days
    # and the inactive account's last login 89 days ago: nothing expired yet
    out = run(example_config, "--remove", "--days", "2", capsys=capsys)
    assert tree["gone"] <= all_paths(tmp_path)
    assert "Removed 0 out of 3 mailboxes" in out
    out = run(example_config, "--remove", "--maxnum", "1", capsys=capsys)
    assert "out of 1 mailboxes" in out


def test_interrupted_account_deletion_is_finished(
    example_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = example_config.mailboxes_dir / f"{DELETING_PREFIX}0a1b2c"
    write(leftover / "cur" / "msg", 1)
    run(example_config, capsys=capsys)
    assert leftover.exists()
    run(example_config, "--remove", capsys=capsys)
    assert not leftover.exists()


def test_files_vanishing_during_the_run_are_tolerated(
    example_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = example_config.mailboxes_dir / "active123@chat.example.org"
    write(mailbox / "password", 1)
    old = write(mailbox / "cur" / "old", 21)
    real_message_files: Callable[[Path], Iterator[expire.MessageFile]] = expire.message_files

    def racing_message_files(path: Path) -> Iterator[expire.MessageFile]:
        for message in real_message_files(path):
            message.path.unlink()  # Dovecot expunges it just after the scan saw it
            yield message

    monkeypatch.setattr(expire, "message_files", racing_message_files)
    expiry = Expiry(example_config, NOW, remove=True, verbose=False, out=io.StringIO())
    expiry.expire_mailbox(mailbox)
    assert not old.exists()
    assert (expiry.files, expiry.removed_files) == (1, 0)


def test_missing_mailboxes_dir_is_no_error(
    example_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not example_config.mailboxes_dir.exists()
    assert "Would remove 0 out of 0 mailboxes" in run(example_config, capsys=capsys)


def test_real_clock_is_the_default(
    example_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    mailbox = example_config.mailboxes_dir / "active123@chat.example.org"
    write(mailbox / "password", 1)
    msg = mailbox / "cur" / "msg"
    write(msg, 0)
    mtime = time.time() - 21 * DAY
    os.utime(msg, (mtime, mtime))
    assert main([str(example_config.inipath), "--remove"]) == 0
    assert not msg.exists()


def test_a_failing_mailbox_does_not_stop_the_others(
    example_config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = example_config.mailboxes_dir
    stuck = write(base / "aaaaaaaa1@chat.example.org" / "cur" / "old", 21)
    old = write(base / "bbbbbbbb1@chat.example.org" / "cur" / "old", 21)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert main([str(example_config.inipath), "--remove"], clock=lambda: NOW) == 1
    assert stuck.exists() and not old.exists()
    assert f"cannot expire {stuck.parent.parent}" in capsys.readouterr().err
