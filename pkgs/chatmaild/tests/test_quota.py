"""chatmail-quota-expire and the quota rule of chatmail-expire: oldest first down to 70 %,
never a message younger than a day."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from chatmaild.config import Config, size_bytes
from chatmaild.expire import DAY, Expiry
from chatmaild.maildir import MessageFile
from chatmaild.quota import KEEP_RECENT_SECONDS, main, messages_to_remove, quota_target_bytes

NOW = 1_750_000_000.0
KIB = 1024


def message(name: str, age_days: float, size: int) -> MessageFile:
    return MessageFile(Path("/m/cur") / name, "cur", NOW - age_days * DAY, size)


# --- rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500M", 500 * 1024**2), ("1000K", 1000 * 1024), ("2G", 2 * 1024**3), ("1T", 1024**4),
     ("500", 500 * 1024**2), ("500MB", 500 * 1024**2), ("1gb", 1024**3), (" 7M ", 7 * 1024**2)],
)
def test_sizes_are_powers_of_1024_and_a_bare_number_is_megabytes(text: str, expected: int) -> None:
    assert size_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "M", "5 M", "1.5G", "-1M", "5P"])
def test_malformed_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        size_bytes(text)


def test_the_target_is_70_percent_of_the_quota() -> None:
    assert quota_target_bytes("1000K") == 700 * KIB
    assert quota_target_bytes("500M") == 350 * 1024**2


def test_quota_size_is_dovecots_s_field_else_the_file_size() -> None:
    assert message("1775324677.M448978P3029.host,S=3235,W=3305:2,S", 1, 999).quota_size == 3235
    assert message("1775324677.M448978P3029.host,S=3235", 1, 999).quota_size == 3235
    assert message("1775324677.M448978P3029.host:2,", 1, 999).quota_size == 999


def test_oldest_first_until_the_target_is_reached() -> None:
    messages = [message("c", 3, 300), message("a", 5, 300), message("b", 4, 300), message("d", 2, 300)]
    assert [m.path.name for m in messages_to_remove(messages, 600, NOW)] == ["a", "b"]
    assert [m.path.name for m in messages_to_remove(messages, 601, NOW)] == ["a", "b"]
    assert [m.path.name for m in messages_to_remove(messages, 599, NOW)] == ["a", "b", "c"]
    assert messages_to_remove(messages, 1200, NOW) == []


def test_messages_younger_than_a_day_are_never_removed() -> None:
    messages = [message("old", 2, 300), message("recent", 0.9, 300), message("new", 0, 300)]
    assert [m.path.name for m in messages_to_remove(messages, 0, NOW)] == ["old"]
    just_recent = MessageFile(Path("/m/cur/edge"), "cur", NOW - KEEP_RECENT_SECONDS + 1, 300)
    assert messages_to_remove([just_recent], 0, NOW) == []


# --- the script on a maildir


def dovecot_file(folder: Path, name: str, age_days: float, size: int) -> Path:
    path = folder / f"{name},S={size},W={size + 10}:2,S"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * (size // 3))  # stored compressed: the S= size is what counts
    mtime = NOW - age_days * DAY
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def mailbox(tmp_path: Path) -> dict[str, Path]:
    box = tmp_path / "abcdefghi@chat.example.org"
    files = {
        "oldest": dovecot_file(box / "cur", "1000.M1P1.h", 5, 300 * KIB),
        "old-sent": dovecot_file(box / ".Sent" / "cur", "1001.M1P1.h", 4, 300 * KIB),
        "old-new": dovecot_file(box / "new", "1002.M1P1.h", 3, 300 * KIB),
        "recent": dovecot_file(box / "new", "1003.M1P1.h", 0.5, 300 * KIB),
    }
    (box / "maildirsize").write_text("1024000S\n1228800 4\n")
    (box / "password").write_text("{SHA512-CRYPT}x")
    return {"box": box, **files}


def quota_expire(argv: list[str]) -> int:
    return main(argv, clock=lambda: NOW)


def test_script_removes_oldest_down_to_the_target_and_resets_the_quota_cache(
    mailbox: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # 1200 KiB in four messages; target 700K: the two oldest go (across folders), 600 KiB stay
    assert quota_expire(["700K", str(mailbox["box"])]) == 0
    assert not mailbox["oldest"].exists() and not mailbox["old-sent"].exists()
    assert mailbox["old-new"].exists() and mailbox["recent"].exists()
    assert not (mailbox["box"] / "maildirsize").exists()
    assert (mailbox["box"] / "password").exists()
    assert "quota-expire: removed 2 message(s) from abcdefghi@chat.example.org" in capsys.readouterr().err


def test_script_target_in_megabytes_as_upstream(mailbox: dict[str, Path]) -> None:
    assert quota_expire(["0", str(mailbox["box"])]) == 0  # 0 MB: everything but recent mail
    assert [p.exists() for k, p in mailbox.items() if k != "box"] == [False, False, False, True]


def test_script_leaves_a_mailbox_under_the_target_alone(
    mailbox: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert quota_expire(["2", str(mailbox["box"])]) == 0
    assert all(p.exists() for p in mailbox.values())
    assert (mailbox["box"] / "maildirsize").exists()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [[], ["700K"], ["lots", "/tmp/x"], ["1", "/tmp/x", "more"]])
def test_script_refuses_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert quota_expire(argv) == 2
    assert capsys.readouterr().err


def test_script_on_a_missing_mailbox_does_nothing(tmp_path: Path) -> None:
    assert quota_expire(["1", str(tmp_path / "gone@chat.example.org")]) == 0


# --- the same rule in the daily expiry


def test_daily_expiry_makes_room_after_the_age_rules(
    make_config: Callable[..., Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(max_mailbox_size="1000K")
    box = config.mailboxes_dir / "abcdefghi@chat.example.org"
    (box).mkdir(parents=True)
    (box / "password").write_text("{SHA512-CRYPT}x")
    expired = dovecot_file(box / "cur", "0999.M1P1.h", 21, 300 * KIB)  # delete_mails_after
    oldest = dovecot_file(box / "cur", "1000.M1P1.h", 5, 300 * KIB)
    older = dovecot_file(box / "cur", "1001.M1P1.h", 4, 300 * KIB)
    old = dovecot_file(box / "cur", "1002.M1P1.h", 3, 300 * KIB)
    recent = [dovecot_file(box / "new", f"20{i}.M1P1.h", 0.2, 300 * KIB) for i in range(3)]

    dry = Expiry(config, NOW, remove=False, verbose=False, out=io.StringIO())
    dry.expire_mailbox(box)
    assert dry.removed_files == 4 and all(p.exists() for p in [expired, oldest, older, old])
    assert capsys.readouterr().err == ""  # nothing removed, nothing to count

    expiry = Expiry(config, NOW, remove=True, verbose=False, out=io.StringIO())
    expiry.expire_mailbox(box)
    # after the 21-day-old one: 1800 KiB; down to 700K is impossible with 900 KiB of recent mail,
    # so every old one goes and the recent ones stay
    assert not any(p.exists() for p in [expired, oldest, older, old])
    assert all(p.exists() for p in recent)
    assert expiry.removed_files == 4
    assert "quota-expire: removed 3 message(s)" in capsys.readouterr().err


def test_daily_expiry_removes_empty_directories_of_no_account(
    example_config: Config, tmp_path: Path
) -> None:
    base = example_config.mailboxes_dir

    def directory(name: str, age_days: float, *files: str, subdirs: tuple[str, ...] = ()) -> Path:
        path = base / name
        for sub in subdirs:
            (path / sub).mkdir(parents=True)
        path.mkdir(parents=True, exist_ok=True)
        for file in files:
            (path / file).write_text("x")
        for p in [*(path / s for s in subdirs), path]:
            os.utime(p, (NOW - age_days * DAY,) * 2)
        return path

    empty = directory("empty0001@chat.example.org", 2)
    skeleton = directory("skeleton1@chat.example.org", 2, subdirs=("cur", "new", "tmp", ".Sent/cur"))
    fresh = directory("fresh0001@chat.example.org", 0.5)  # doveauth may be creating it right now
    with_file = directory("withfile1@chat.example.org", 2, "dovecot.index")
    account = directory("account01@chat.example.org", 2, "password")
    os.utime(account / "password", (NOW - DAY,) * 2)
    not_an_address = directory("pending_notifications", 2)

    expiry = Expiry(example_config, NOW, remove=True, verbose=False, out=io.StringIO())
    for path in [empty, skeleton, fresh, with_file, account]:
        expiry.expire_mailbox(path)
    assert not empty.exists() and not skeleton.exists()
    assert fresh.exists() and with_file.exists() and account.exists()
    assert not_an_address.exists()
    assert expiry.removed_mailboxes == 2
