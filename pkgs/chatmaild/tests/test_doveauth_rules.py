"""Pure rules: which addresses are valid and which new accounts may be created."""

from __future__ import annotations

import pytest

from chatmaild.accounts import (
    InvalidAddress,
    check_address,
    creation_refusal,
    day_timestamp,
    get_mailbox,
)

DOMAIN = "chat.example.org"


@pytest.mark.parametrize(
    "addr",
    [f"abcdefghi@{DOMAIN}", f"ac1_xyz12@{DOMAIN}", f"a.b-c_d9@{DOMAIN}", f"0@{DOMAIN}"],
)
def test_valid_addresses(addr):
    assert check_address(addr, DOMAIN) == addr.split("@")[0]


@pytest.mark.parametrize(
    "addr",
    [
        "",
        "abcdefghi",
        f"@{DOMAIN}",
        f"a@b@{DOMAIN}",
        f"../x@{DOMAIN}",
        f"..@{DOMAIN}",
        f".@{DOMAIN}",
        f".hidden@{DOMAIN}",
        f"a..b@{DOMAIN}",
        f"ab.@{DOMAIN}",
        f"a/b@{DOMAIN}",
        f"a\\b@{DOMAIN}",
        f"a\x00b@{DOMAIN}",
        f"a\nb@{DOMAIN}",
        f"a\x7fb@{DOMAIN}",
        f"a b@{DOMAIN}",
        f"a\tb@{DOMAIN}",
        f"-abc@{DOMAIN}",
        f"Abcdefghi@{DOMAIN}",
        f"abc+tag@{DOMAIN}",
        f'a"b@{DOMAIN}',
        f"äbc@{DOMAIN}",
        "abcdefghi@other.org",
        f"abcdefghi@{DOMAIN}.evil",
        f"abcdefghi@sub.{DOMAIN}",
        f"abcdefghi@{DOMAIN.upper()}",
        f"abcdefghi@{DOMAIN}/../x",
    ],
)
def test_invalid_addresses(addr):
    with pytest.raises(InvalidAddress):
        check_address(addr, DOMAIN)


def test_mailbox_paths_stay_inside_mailboxes_dir(example_config):
    mailbox = get_mailbox(example_config, f"abcdefghi@{DOMAIN}")
    assert mailbox.maildir == example_config.mailboxes_dir / f"abcdefghi@{DOMAIN}"
    assert mailbox.password_path == mailbox.maildir / "password"
    assert mailbox.maildir.parent == example_config.mailboxes_dir
    with pytest.raises(InvalidAddress):
        get_mailbox(example_config, f"../abcdefghi@{DOMAIN}")


def test_incoming_cleartext_flag(example_config):
    mailbox = get_mailbox(example_config, f"abcdefghi@{DOMAIN}")
    mailbox.maildir.mkdir(parents=True)
    assert mailbox.is_incoming_cleartext_ok()
    mailbox.enforce_e2ee_path.touch()
    assert not mailbox.is_incoming_cleartext_ok()


def test_creation_allowed(example_config):
    assert creation_refusal(example_config, f"abcdefghi@{DOMAIN}", "x" * 9, nocreate=False) is None


def test_creation_refused_by_nocreate(example_config):
    reason = creation_refusal(example_config, f"abcdefghi@{DOMAIN}", "x" * 9, nocreate=True)
    assert "nocreate" in reason


def test_creation_refused_for_short_password(example_config):
    reason = creation_refusal(example_config, f"abcdefghi@{DOMAIN}", "x" * 8, nocreate=False)
    assert "at least 9" in reason


@pytest.mark.parametrize("addr", [f"a../b@{DOMAIN}", f"abcdefghi@other.org", ""])
def test_creation_refused_for_invalid_address(example_config, addr):
    assert creation_refusal(example_config, addr, "x" * 20, nocreate=False)


def test_creation_length_bounds(make_config):
    config = make_config(username_min_length=6, username_max_length=10)
    for localpart, allowed in [("a1234", False), ("012345", True), ("0123456789", True), ("0123456789x", False)]:
        reason = creation_refusal(config, f"{localpart}@{DOMAIN}", "x" * 9, nocreate=False)
        assert (reason is None) == allowed, (localpart, reason)


def test_day_timestamp():
    assert day_timestamp(86400 * 3 + 5000.7) == 86400 * 3
    assert day_timestamp(86400 * 3) == 86400 * 3
