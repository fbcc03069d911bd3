"""Hostile input for doveauth's dict protocol: random and mutated request lines, in batches over
fresh connections, against the daemon as a subprocess. It answers or closes, never dies, a valid
lookup works after every batch, and nothing is written outside the mailboxes directory.

CI-sized by default (>= 10^5 lines); CHATMAIL_FUZZ_SCALE=N multiplies the number of batches.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmaild.dictproto import MAX_LINE_LENGTH, passdb_key, request_line, userdb_key

from test_doveauth_daemon import ADDR, DOMAIN, Daemon

SCALE = float(os.environ.get("CHATMAIL_FUZZ_SCALE", "1"))
LINES_PER_BATCH = 500
BATCHES = max(1, int(200 * SCALE))  # 200 * 500 = 10^5 lines
REPLY_TIMEOUT = 20.0

# addresses that try to leave the mailboxes directory or smuggle odd characters
HOSTILE_USERS = [
    "../../etc/passwd", f"../{DOMAIN}", f"..@{DOMAIN}", f".@{DOMAIN}", f"a/../../b@{DOMAIN}",
    f"abc/def@{DOMAIN}", f"/etc/passwd@{DOMAIN}", f"abcdefghi@{DOMAIN}/..", f"..%2f..%2fetc@{DOMAIN}",
    f"abc\x00def@{DOMAIN}", f"abcdefgh\u0131@{DOMAIN}", f"ABCDEFGHI@{DOMAIN}", f"abcdefghi@{DOMAIN}\n",
    f"abcdefghi@../{DOMAIN}", f"abcdefghi@{DOMAIN}@{DOMAIN}", "", "@", f"~root@{DOMAIN}", f"-rf@{DOMAIN}",
    f"abc\\def@{DOMAIN}", f"abc'\"d@{DOMAIN}",
]


def template_lines(rng: random.Random, transactions: bool) -> list[bytes]:
    """Valid requests of every kind doveauth knows; with TRANSACTIONS also the steps of the
    last-login transaction (a step with a wrong id closes the connection, as Dovecot's does)."""
    user = rng.choice([ADDR, f"fz{rng.randrange(10**7):07d}@{DOMAIN}", rng.choice(HOSTILE_USERS)])
    lines = [
        request_line("H", "3", "2", "0", "", "auth"),
        request_line("L", passdb_key(user, "fuzzpassword1"), user),
        request_line("L", userdb_key(user), user),
        request_line("L", "shared/" + rng.choice(["passdb/", "userdb/", "last-login/", "", "x/"]) + user, user),
        request_line("I", "0", str(rng.randrange(3)), rng.choice(["shared/userdb/", "shared/", ""]), "*"),
    ]
    if transactions:
        tid = str(rng.randrange(100))
        lines += [
            request_line("B", tid, user),
            request_line("S", tid, "shared/last-login/" + user, "1700000000"),
            request_line("C", tid),
            request_line("D", tid),
            request_line("R", tid),
        ]
    return lines


def mutated(line: bytes, rng: random.Random) -> bytes:
    data = bytearray(line.rstrip(b"\n"))
    for _ in range(rng.randrange(1, 4)):
        choice = rng.randrange(7)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[position:position] = rng.choice([b"\t", b"\x01", b"\x01x", b"\x00", b'"', b"\\", b"\r", b"/../"])
        elif choice == 2:
            del data[position:]
        elif choice == 3:
            data[position:position] = rng.randbytes(rng.randrange(1, 40))
        elif choice == 4:
            data[position:position] = data[: rng.randrange(len(data) + 1)]
        elif choice == 5:
            data[position:position] = b"\t" + rng.choice(HOSTILE_USERS).encode()
        else:
            data[position:position] = b"y" * rng.choice([100, 1000, 10_000])
    return bytes(data) + b"\n"


def random_line(rng: random.Random, transactions: bool) -> bytes:
    kind = rng.randrange(10)
    if kind < 6:
        return mutated(rng.choice(template_lines(rng, transactions)), rng)
    if kind < 8:
        return rng.choice(template_lines(rng, transactions))
    if kind == 8:
        return rng.randbytes(rng.randrange(0, 200)).replace(b"\n", b"") + b"\n"
    commands = b"HLIBSCDRUATZ" if transactions else b"HLIZ\xff"
    return bytes([rng.choice(commands)]) + b"\t".join(
        rng.randbytes(rng.randrange(0, 20)).replace(b"\n", b"") for _ in range(rng.randrange(0, 6))) + b"\n"


def exchange(daemon: Daemon, payload: bytes) -> bytes:
    """Send PAYLOAD, half-close, read until the daemon closes; bounded by REPLY_TIMEOUT."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(str(daemon.socket_path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it closed on a line it refuses (e.g. one longer than MAX_LINE_LENGTH)
        replies = bytearray()
        while chunk := _recv(sock):
            replies += chunk
    return bytes(replies)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except ConnectionResetError:
        return b""


def files_outside(root: Path, inside: Path) -> set[Path]:
    return {path for path in root.rglob("*") if inside not in path.parents and path != inside}


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory) -> Iterator[Daemon]:
    tmp_path = tmp_path_factory.mktemp("fuzz-doveauth")
    ini = tmp_path / "chatmail.ini"
    # max_load_1m: the test machine's load is no relay's (doveauth refuses new accounts above 5)
    ini.write_text(f"[params]\nmail_domain = {DOMAIN}\nmailboxes_dir = {tmp_path}/mail/{DOMAIN}\n"
                   "max_load_1m = 1000\n")
    daemon = Daemon(tmp_path, ini)
    with daemon.client() as client:
        client.passdb(ADDR, "secret1234")
    daemon.outside_before = files_outside(tmp_path, tmp_path / "mail")  # type: ignore[attr-defined]
    daemon.lines_sent = daemon.replies = 0  # type: ignore[attr-defined]
    yield daemon
    assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log(), daemon.log()


@settings(max_examples=BATCHES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), greeting=st.booleans(), interesting=st.lists(st.binary(max_size=300), max_size=5))
def test_random_and_mutated_lines(fuzz_daemon: Daemon, seed: int, greeting: bool, interesting: list[bytes]) -> None:
    rng = random.Random(seed)
    # most batches without transaction steps, which close the connection at the first bad one
    transactions = seed % 5 == 0
    lines = [random_line(rng, transactions) for _ in range(LINES_PER_BATCH - len(interesting))]
    lines += [line.replace(b"\n", b"") + b"\n" for line in interesting]
    rng.shuffle(lines)
    if seed % 20 == 0:  # now and then a batch ends in a line over the limit: the daemon closes
        lines.append(b"L" + b"z" * MAX_LINE_LENGTH + b"\n")
    if greeting:
        lines.insert(0, request_line("H", "3", "2", "0", "", "auth"))
    replies = exchange(fuzz_daemon, b"".join(lines))
    fuzz_daemon.lines_sent += len(lines)  # type: ignore[attr-defined]
    fuzz_daemon.replies += replies.count(b"\n")  # type: ignore[attr-defined]
    # every reply line is one the protocol knows
    for reply in replies.split(b"\n")[:-1]:
        assert reply[:1] in (b"O", b"N", b"F", b"A", b""), reply[:200]
    assert fuzz_daemon.proc.poll() is None, fuzz_daemon.log()
    with fuzz_daemon.client() as client:
        assert client.passdb(ADDR, "secret1234") is not None


def test_fuzzing_sent_enough_and_touched_nothing_outside(fuzz_daemon: Daemon) -> None:
    """Runs after the fuzzing above (file order): the totals and the file system."""
    assert fuzz_daemon.lines_sent >= BATCHES * LINES_PER_BATCH >= 10**5 * min(SCALE, 1)  # type: ignore[attr-defined]
    # most lines were read and answered, not cut short by an early close
    print(f"{fuzz_daemon.lines_sent} lines sent, {fuzz_daemon.replies} reply lines")  # type: ignore[attr-defined]
    assert fuzz_daemon.replies > fuzz_daemon.lines_sent / 3  # type: ignore[attr-defined]
    root = fuzz_daemon.socket_path.parent
    outside = files_outside(root, root / "mail") - fuzz_daemon.outside_before  # type: ignore[attr-defined]
    assert outside == set(), sorted(outside)[:20]
    mailboxes = root / "mail" / DOMAIN
    for entry in mailboxes.iterdir():
        assert entry.is_dir() and not entry.is_symlink(), entry
        assert entry.resolve().parent == mailboxes.resolve(), entry
    with fuzz_daemon.client() as client:
        assert client.passdb(ADDR, "secret1234") is not None


@pytest.mark.parametrize("password", ["x" * 513, "ü" * 257, "secret\x00secret"])
def test_passwords_crypt_cannot_hash_are_refused_for_creation(example_config, password: str) -> None:
    from chatmaild.accounts import creation_refusal

    assert creation_refusal(example_config, ADDR, password, nocreate=False)
    assert creation_refusal(example_config, ADDR, "x" * 512, nocreate=False) is None
