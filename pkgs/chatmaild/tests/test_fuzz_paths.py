"""Localparts that try path traversal or odd characters never reach a path outside the mailboxes
directory: not through the address rule, not through account creation, last-login records, push
tokens or filtermail's cleartext check. CHATMAIL_FUZZ_SCALE=N runs N times as many examples."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmaild.account_store import AccountStore, CreationFailed
from chatmaild.accounts import InvalidAddress, get_mailbox
from chatmaild.filtermail import mailbox_accepts_cleartext
from chatmaild.metadata import TokenStore

SCALE = float(os.environ.get("CHATMAIL_FUZZ_SCALE", "1"))
DOMAIN = "chat.example.org"
FRAGMENTS = ["..", ".", "/", "\\", "%2e", "%2f", "\x00", "~", "-", "+", "@", "\n", "\u2024", "\uff0e",
             "/etc/passwd", "../", "..\\", "/..", "./", "\u0130", "A", "a", "z", "9", "_", " "]

localparts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), min_size=1, max_size=8).map("".join)
domains = st.sampled_from([DOMAIN, f"../{DOMAIN}", f"{DOMAIN}/..", f"{DOMAIN}/x", "", DOMAIN.upper()])
addresses = st.builds(lambda local, domain: f"{local}@{domain}", localparts, domains) | st.text(max_size=30)


def snapshot(root: Path, mailboxes: Path) -> set[Path]:
    return {path for path in root.rglob("*") if mailboxes not in path.parents and path != mailboxes}


@settings(max_examples=int(5000 * SCALE), deadline=None, derandomize=True)
@given(addresses)
def test_a_valid_address_is_one_plain_directory_in_mailboxes_dir(addr: str) -> None:
    mailboxes = Path("/srv/mail") / DOMAIN
    config = type("Config", (), {"mail_domain": DOMAIN, "mailboxes_dir": mailboxes})()
    try:
        mailbox = get_mailbox(config, addr)  # type: ignore[arg-type]
    except InvalidAddress:
        return
    name = mailbox.maildir.name
    assert mailbox.maildir.parent == mailboxes
    assert name not in ("", ".", "..") and "/" not in name and "\x00" not in name
    assert os.path.normpath(mailbox.maildir) == str(mailbox.maildir)


@settings(max_examples=int(300 * SCALE), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(addr=addresses)
def test_operations_on_hostile_addresses_stay_inside(tmp_path, make_config, addr: str) -> None:
    config = make_config(mailboxes_dir=tmp_path / "root" / "mail" / DOMAIN)
    mailboxes = config.mailboxes_dir
    mailboxes.mkdir(parents=True, exist_ok=True)
    (tmp_path / "root" / "outside").mkdir(exist_ok=True)
    root = tmp_path / "root"
    before = snapshot(root, mailboxes)
    store = AccountStore(config)
    mailbox = store.mailbox(addr)
    if mailbox is not None:
        try:
            store.create(mailbox, lambda: "{SHA512-CRYPT}$6$x$y")
        except CreationFailed:
            pass
    store.lookup(addr)
    store.record_login(addr, 1_700_000_000)
    try:
        TokenStore(config).add(addr, "token")
    except InvalidAddress:
        pass
    mailbox_accepts_cleartext(config, addr)
    assert snapshot(root, mailboxes) == before
    for entry in mailboxes.iterdir():
        assert entry.parent == mailboxes and entry.is_dir() and not entry.is_symlink(), entry
