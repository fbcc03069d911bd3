"""AccountStore: cached lookups, atomic single-winner creation, last login."""

from __future__ import annotations

import os
import threading

import pytest

from chatmaild.account_store import AccountStore, CreationFailed
from chatmaild.accounts import get_mailbox
from chatmaild.passwords import hash_password, verify_password

ADDR = "abcdefghi@chat.example.org"


@pytest.fixture
def store(example_config):
    return AccountStore(example_config)


def create(store, addr=ADDR, password="secret1234"):
    return store.create(get_mailbox(store.config, addr), lambda: hash_password(password))


def test_create_then_lookup(store):
    assert store.lookup(ADDR) is None
    stored = create(store)
    assert verify_password("secret1234", stored)
    account = store.lookup(ADDR)
    assert account.password_hash == stored
    maildir = store.config.mailboxes_dir / ADDR
    assert account.mailbox.maildir == maildir
    assert (maildir / "password").read_text() == stored
    assert (maildir / "password").stat().st_mode & 0o777 == 0o600
    assert (maildir / "enforceE2EEincoming").exists()
    assert [p.name for p in maildir.iterdir() if p.name.startswith("password.tmp")] == []


def test_second_create_keeps_first_hash_without_hashing(store):
    first = create(store)

    def must_not_hash():
        raise AssertionError("hashed although the account exists")

    assert store.create(get_mailbox(store.config, ADDR), must_not_hash) == first


def test_concurrent_creators_store_one_hash(store):
    results = []
    barrier = threading.Barrier(20)

    def creator(i):
        barrier.wait()
        results.append(create(AccountStore(store.config), password=f"password{i:04d}"))

    threads = [threading.Thread(target=creator, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 20 and len(set(results)) == 1
    assert (store.config.mailboxes_dir / ADDR / "password").read_text() == results[0]


def test_cache_follows_file_changes(store):
    create(store)
    account = store.lookup(ADDR)
    assert store.lookup(ADDR) is account  # cached
    path = account.mailbox.password_path
    replacement = hash_password("another1234")
    tmp = path.with_name("new")
    tmp.write_text(replacement)
    os.rename(tmp, path)  # new inode, as any atomic rewrite
    assert store.lookup(ADDR).password_hash == replacement
    path.unlink()
    assert store.lookup(ADDR) is None


def test_empty_password_file_is_no_account(store):
    maildir = store.config.mailboxes_dir / ADDR
    maildir.mkdir(parents=True)
    (maildir / "password").write_text("")
    assert store.lookup(ADDR) is None
    stored = create(store)  # an empty file does not block creation
    assert store.lookup(ADDR).password_hash == stored


def test_invalid_addresses_never_touch_the_filesystem(store, tmp_path):
    outside = tmp_path / "password"
    outside.write_text("{PLAIN}x")
    assert store.lookup("../password@chat.example.org") is None
    assert store.lookup("..@chat.example.org") is None
    assert store.lookup("abcdefghi@other.org") is None


def test_symlinked_maildir_is_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store.config.mailboxes_dir.mkdir(parents=True)
    (store.config.mailboxes_dir / ADDR).symlink_to(elsewhere)
    with pytest.raises(CreationFailed):
        create(store)
    assert list(elsewhere.iterdir()) == []


def test_symlinked_mailboxes_dir_is_followed(make_config, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    store = AccountStore(make_config(mailboxes_dir=link))
    stored = create(store)
    assert (real / ADDR / "password").read_text() == stored
    assert store.lookup(ADDR).password_hash == stored


def test_record_login_sets_day(store):
    create(store)
    day = 1_700_000_000 // 86400 * 86400
    assert store.record_login(ADDR, 1_700_000_000)
    assert int(os.stat(store.config.mailboxes_dir / ADDR / "password").st_mtime) == day
    assert store.lookup(ADDR) is not None
    assert not store.record_login("nobody123@chat.example.org", 1_700_000_000)
    assert not store.record_login("../x@chat.example.org", 1_700_000_000)


def test_addresses(store):
    assert store.addresses() == []
    for i in range(3):
        create(store, addr=f"abcdefgh{i}@chat.example.org")
    (store.config.mailboxes_dir / "not-an-account").mkdir()
    (store.config.mailboxes_dir / "stray@chat.example.org").write_text("")
    assert sorted(store.addresses()) == [f"abcdefgh{i}@chat.example.org" for i in range(3)]


def test_lookup_ignores_symlinked_maildir(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "password").write_text(hash_password("planted123"))
    store.config.mailboxes_dir.mkdir(parents=True)
    (store.config.mailboxes_dir / ADDR).symlink_to(elsewhere)
    assert store.lookup(ADDR) is None
    assert store.addresses() == []
