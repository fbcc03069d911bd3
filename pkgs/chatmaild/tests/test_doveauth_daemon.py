"""The doveauth daemon as a subprocess, spoken to over its unix socket like Dovecot does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatmaild
from chatmaild.bench import start_doveauth
from chatmaild.dictclient import DictClient
from chatmaild.dictproto import MAX_LINE_LENGTH, passdb_key, request_line
from chatmaild.passwords import verify_password

DOMAIN = "chat.example.org"
ADDR = f"abcdefghi@{DOMAIN}"
PACKAGE_SRC = str(Path(chatmaild.__file__).parent.parent)


class Daemon:
    def __init__(self, tmp_path: Path, inipath: Path) -> None:
        self.socket_path = tmp_path / "doveauth.socket"
        self.nocreate = tmp_path / "nocreate"
        self.log_path = tmp_path / "doveauth.log"
        env = dict(os.environ, CHATMAIL_NOCREATE_PATH=str(self.nocreate), PYTHONPATH=PACKAGE_SRC)
        self.proc = start_doveauth(self.socket_path, inipath, self.log_path, env)

    def client(self) -> DictClient:
        return DictClient(self.socket_path, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


@pytest.fixture
def daemon(tmp_path, make_ini) -> Iterator[Daemon]:
    d = Daemon(tmp_path, make_ini())
    yield d
    d.stop()


def stored_hash(daemon: Daemon, addr: str = ADDR) -> str:
    return (daemon.socket_path.parent / "mail" / DOMAIN / addr / "password").read_text()


def test_create_on_first_login_then_same_hash(daemon):
    with daemon.client() as c:
        first = c.passdb(ADDR, "secret1234")
        assert first["password"].startswith("{SHA512-CRYPT}$6$")
        assert verify_password("secret1234", first["password"])
        assert first["home"] == str(daemon.socket_path.parent / "mail" / DOMAIN / ADDR)
        assert first["uid"] == first["gid"] == "vmail" and first["addr"] == ADDR
        assert first["password"] == stored_hash(daemon)
    with daemon.client() as c:
        assert c.passdb(ADDR, "secret1234") == first
        # a wrong password still gets the stored hash: Dovecot verifies it and refuses the login
        wrong = c.passdb(ADDR, "wrongpassword")
        assert wrong == first and not verify_password("wrongpassword", wrong["password"])
        assert c.userdb(ADDR) == first


def test_userdb_of_unknown_user_is_not_found(daemon):
    with daemon.client() as c:
        assert c.userdb(ADDR) is None
    assert not (daemon.socket_path.parent / "mail" / DOMAIN / ADDR).exists()


def test_password_with_special_characters(daemon):
    password = "p\"w'\\d/x y\tz"
    with daemon.client() as c:
        fields = c.passdb(ADDR, password)
    assert verify_password(password, fields["password"])


def test_concurrent_first_logins_store_one_hash(daemon):
    replies: list[dict] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def login(i: int) -> None:
        try:
            with daemon.client() as c:
                barrier.wait(10)
                replies.append(c.passdb(ADDR, f"password{i:04d}"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    hashes = {r["password"] for r in replies}
    assert len(replies) == 20 and hashes == {stored_hash(daemon)}
    (the_hash,) = hashes
    assert sum(verify_password(f"password{i:04d}", the_hash) for i in range(20)) == 1
    assert daemon.log().count("created account") == 1


def test_nocreate_file(daemon):
    daemon.nocreate.touch()
    with daemon.client() as c:
        assert c.passdb(ADDR, "secret1234") is None
        daemon.nocreate.unlink()
        created = c.passdb(ADDR, "secret1234")
        daemon.nocreate.touch()
        # existing accounts keep working while creation is off
        assert c.passdb(ADDR, "secret1234") == created


@pytest.mark.parametrize(
    ("addr", "password"),
    [
        (f"../x@{DOMAIN}", "secret1234"),
        (f"../../etc@{DOMAIN}", "secret1234"),
        (f"a/b@{DOMAIN}", "secret1234"),
        (f"abc/../../x@{DOMAIN}", "secret1234"),
        (f"abcdefgh@{DOMAIN}", "secret1234"),
        (f"abcdefghij@{DOMAIN}", "secret1234"),
        ("abcdefghi@other.org", "secret1234"),
        (f"abcdefghi@{DOMAIN}@{DOMAIN}", "secret1234"),
        (f"ABCDEFGHI@{DOMAIN}", "secret1234"),
        (f"abcdefg\x00i@{DOMAIN}", "secret1234"),
        (ADDR, "short"),
        (ADDR, ""),
    ],
)
def test_refused_creation(daemon, tmp_path, addr, password):
    before = sorted(p for p in tmp_path.rglob("*") if p.name != "doveauth.log")
    with daemon.client() as c:
        assert c.passdb(addr, password) is None
        assert c.userdb(addr) is None
    after = sorted(p for p in tmp_path.rglob("*") if p.name != "doveauth.log")
    assert after == before


GARBAGE = [
    b"\xff\xfe\x00binary\n",
    b"\n",
    b"Q\n",
    b"Lshared/passdb/only-a-password\n",
    b"Lshared/passdb/pw\"a@b\"c\n",
    b"Lprivate/whatever\n",
    b"Lshared/passdb/trailing\\\n",
    b"L\x01\n",
    b"Lshared/passdb/secret1234\"abcdefghi@chat.example.org\x01\n",
    b"Inot-a-number\n",
    b"I0\n",
    b"Sno-transaction\n",
    b"B\n",
    b"Cmissing\n",
    b"x" * 100_000 + b"\n",
    b"L" + b"y" * 70_000,  # no newline at all, then EOF
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_gets_failure_or_close_and_daemon_survives(daemon, garbage):
    with daemon.client() as c:
        c.send(garbage)
        if len(garbage) > MAX_LINE_LENGTH:
            # answered F, then an orderly end (never a reset, however the input was read)
            c.sock.shutdown(socket.SHUT_WR)
            assert [c.readline(), c.readline()] == [b"F\n", b""]
        elif garbage.startswith((b"S", b"B", b"C")):
            c.sock.shutdown(socket.SHUT_WR)
            assert c.readline() == b""
        else:
            assert c.readline() in (b"F\n", b"N\n")
    with daemon.client() as c:
        assert c.passdb(ADDR, "secret1234")["password"] == stored_hash(daemon)
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("fatal", [b"x" * 100_000 + b"\n", b"Bnot-a-number\n"], ids=["long", "bad-id"])
def test_input_after_a_fatal_line_is_drained_not_reset(daemon, fatal):
    # Much more input than the daemon reads at once: closing with it unread made the kernel
    # reset the connection, and the client lost the replies to a BrokenPipe/ConnectionReset.
    with daemon.client() as c:
        c.send(request_line("L", f"shared/userdb/nobody123@{DOMAIN}") + fatal + b"y\n" * 1_000_000)
        c.sock.shutdown(socket.SHUT_WR)
        replies = b"".join(iter(c.readline, b""))
    assert replies == b"N\n" + (b"F\n" if len(fatal) > MAX_LINE_LENGTH else b"")
    with daemon.client() as c:
        assert c.userdb(ADDR) is None


def test_connection_survives_a_bad_line(daemon):
    with daemon.client() as c:
        assert c.request(b"Zbogus\n") == b"F\n"
        assert c.request(b"\xff\n") == b"F\n"
        assert c.passdb(ADDR, "secret1234") is not None


def test_pipelined_requests_are_answered_in_order(daemon):
    with daemon.client() as c:
        c.passdb(ADDR, "secret1234")
        lines = [request_line("L", passdb_key(ADDR, "x"), ADDR), request_line("L", "shared/userdb/nobody123@" + DOMAIN)] * 50
        c.send(b"".join(lines))
        replies = [c.readline() for _ in lines]
    assert all(r.startswith(b"O{") for r in replies[::2])
    assert all(r == b"N\n" for r in replies[1::2])


def test_iterate_users(daemon):
    addrs = [f"abcdefgh{i}@{DOMAIN}" for i in range(5)]
    with daemon.client() as c:
        assert c.iterate_users() == []
        for addr in addrs:
            c.passdb(addr, "secret1234")
        assert sorted(c.iterate_users()) == addrs
        c.send(request_line("I", "0", "2", "shared/userdb/", "*"))
        rows = [c.readline(), c.readline(), c.readline()]
        assert rows[2] == b"\n" and all(r.startswith(b"Oshared/userdb/") for r in rows[:2])
        assert c.request(request_line("I", "0", "0", "shared/other/", "*")) == b"\n"


def test_last_login_transaction(daemon):
    with daemon.client() as c:
        c.passdb(ADDR, "secret1234")
        c.send(request_line("B", "1", ADDR))
        c.send(request_line("S", "1", f"shared/last-login/{ADDR}", "1700000000"))
        assert c.request(request_line("C", "1")) == b"O1\n"
        c.send(request_line("B", "2", ADDR))
        c.send(request_line("S", "2", "shared/other/key", "1"))
        assert c.request(request_line("D", "2")) == b"AF2\n"
    password_file = daemon.socket_path.parent / "mail" / DOMAIN / ADDR / "password"
    assert int(password_file.stat().st_mtime) == 1700000000 // 86400 * 86400


def test_socket_mode_stale_socket_and_clean_exit(tmp_path, make_ini):
    inipath = make_ini()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "doveauth.socket"))
    stale.close()  # leaves the socket file behind, as a crashed daemon would
    d = Daemon(tmp_path, inipath)
    try:
        with d.client() as c:
            assert c.userdb(ADDR) is None
        assert d.socket_path.stat().st_mode & 0o777 == 0o660
    finally:
        assert d.stop() == 0
    assert not d.socket_path.exists()
    assert "Traceback" not in d.log()


def test_bad_config_exits_with_message(tmp_path):
    ini = tmp_path / "chatmail.ini"
    ini.write_text("[params]\nmail_domain = x.org\nfiltermail_smtp_port = nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatmaild.doveauth", str(tmp_path / "s"), str(ini)],
        capture_output=True, text=True, timeout=10, env=dict(os.environ, PYTHONPATH=PACKAGE_SRC),
    )
    assert result.returncode == 1
    assert "filtermail_smtp_port" in result.stderr and "'nope'" in result.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "chatmaild.doveauth"], capture_output=True, text=True, timeout=10,
        env=dict(os.environ, PYTHONPATH=PACKAGE_SRC),
    )
    assert usage.returncode == 2 and "usage: doveauth SOCKET_PATH INI_PATH" in usage.stderr


def test_pipelined_creations_keep_reply_order(daemon):
    new = [f"pipeline{i}@{DOMAIN}" for i in range(5)]
    with daemon.client() as c:
        lines = []
        for addr in new:
            lines.append(request_line("L", passdb_key(addr, "secret1234"), addr))
            lines.append(request_line("L", f"shared/userdb/{addr}", addr))
            lines.append(request_line("L", f"shared/userdb/nobody123@{DOMAIN}"))
        c.send(b"".join(lines))
        replies = [c.readline() for _ in lines]
    for i, addr in enumerate(new):
        created, looked_up, missing = replies[3 * i : 3 * i + 3]
        assert created.startswith(b"O{") and addr.encode() in created
        assert looked_up == created
        assert missing == b"N\n"


def test_refuses_a_socket_path_that_is_not_a_socket(tmp_path):
    ini = tmp_path / "chatmail.ini"
    ini.write_text(f"[params]\nmail_domain = x.org\nmailboxes_dir = {tmp_path}\n")
    (tmp_path / "s").write_text("not a socket")
    result = subprocess.run(
        [sys.executable, "-m", "chatmaild.doveauth", str(tmp_path / "s"), str(ini)],
        capture_output=True, text=True, timeout=10, env=dict(os.environ, PYTHONPATH=PACKAGE_SRC),
    )
    assert result.returncode == 1 and "is not a socket" in result.stderr
    assert (tmp_path / "s").read_text() == "not a socket"
