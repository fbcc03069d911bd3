"""filtermail as a milter: the milter protocol as Postfix speaks it (chatmaild.milter.MilterClient)
against filtermail's milter sessions on a unix socket, in a thread of the test process, and the
``filtermail INI outgoing-milter|incoming-milter SOCKET`` console script."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatmaild import milter, testmail
from chatmaild.config import Config
from chatmaild.dkimverify import NO_SIGNATURE
from chatmaild.filtermail import IncomingMilter, OutgoingMilter, resets_sender
from chatmaild.milter import SMFIR_CHGFROM, MilterClient
from chatmaild.ratelimit import SendRateLimiter

from test_dkimverify import Keys

DOMAIN = "chat.example.org"
TIMEOUT = 10.0
BURST = 3


class MilterServer:
    """filtermail's milter sessions on a unix socket, served by an event loop in a thread."""

    def __init__(self, path: Path, factory: Callable[[], milter.MilterSession]) -> None:
        self.path = path
        self.factory = factory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None

    def __enter__(self) -> MilterServer:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            self.loop.create_unix_server(self.factory, str(self.path)), self.loop).result(TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)

    def client(self, **kwargs: object) -> MilterClient:
        return MilterClient(str(self.path), timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


_counter = iter(range(10**6))


def new_addr(domain: str = DOMAIN) -> str:
    return f"user{next(_counter):05d}@{domain}"


def encrypted(sender: str, to: str) -> bytes:
    return testmail.to_bytes(testmail.make_encrypted_message(sender, [to]))


def plain(sender: str, to: str) -> bytes:
    return testmail.to_bytes(testmail.make_plain_message(sender, [to]))


@pytest.fixture
def config(make_config) -> Config:
    return make_config(DOMAIN, max_user_send_per_minute=60, max_user_send_burst_size=BURST)


@pytest.fixture
def outgoing(tmp_path: Path, config: Config) -> Iterator[MilterServer]:
    limiter = SendRateLimiter(config.max_user_send_per_minute, config.max_user_send_burst_size)
    with MilterServer(tmp_path / "out.sock", lambda: OutgoingMilter(limiter)) as server:
        yield server


@pytest.fixture
def incoming(tmp_path: Path, config: Config) -> Iterator[MilterServer]:
    with MilterServer(tmp_path / "in.sock", lambda: IncomingMilter(config, None)) as server:
        yield server


# --- outgoing


def test_outgoing_encrypted_mail_is_accepted(outgoing: MilterServer):
    client = outgoing.client()
    sender, to = new_addr(), new_addr("other.test")
    answer = client.transaction(sender, [to], encrypted(sender, to), login=sender)
    assert answer.accepted and answer.edits == []
    client.close()


@pytest.mark.parametrize("make,code", [(plain, "523 Encryption Needed: Invalid Unencrypted Mail")])
def test_outgoing_cleartext_is_refused_with_523(outgoing: MilterServer, make, code):
    client = outgoing.client()
    sender, to = new_addr(), new_addr("other.test")
    answer = client.transaction(sender, [to], make(sender, to), login=sender)
    assert (answer.command, answer.text) == (milter.SMFIR_REPLYCODE, code)
    # the session goes on: the next mail is judged on its own
    assert client.transaction(sender, [to], encrypted(sender, to), login=sender).accepted
    client.close()


def test_outgoing_forged_from_is_refused(outgoing: MilterServer):
    client = outgoing.client()
    sender, other, to = new_addr(), new_addr(), new_addr("other.test")
    answer = client.transaction(sender, [to], encrypted(other, to), login=sender)
    assert answer.text == f"500 Invalid FROM <{other!r}> for <{sender!r}>"


def test_outgoing_securejoin_request_passes(outgoing: MilterServer):
    client = outgoing.client()
    sender, to = new_addr(), new_addr("other.test")
    message = testmail.to_bytes(testmail.make_securejoin_request(sender, to))
    assert client.transaction(sender, [to], message, login=sender).accepted


def test_outgoing_invalid_sender_address_at_mail(outgoing: MilterServer):
    answer = outgoing.client().transaction("no-at-sign", ["a@b.test"], b"", login="no-at-sign")
    assert answer.text == "500 Invalid from address <'no-at-sign'>"


def test_outgoing_rate_limit_at_mail_counts_the_login(outgoing: MilterServer):
    client = outgoing.client()
    sender, to = new_addr(), new_addr("other.test")
    for _ in range(BURST):
        assert client.transaction(sender, [to], encrypted(sender, to), login=sender).accepted
    answer = client.transaction(sender, [to], encrypted(sender, to), login=sender)
    assert answer.text == f"450 4.7.1: Too much mail from {sender}"
    # someone else's MAIL FROM (Postfix refuses it with 553 later) does not use up the budget
    victim = new_addr()
    for _ in range(BURST + 2):
        client.transaction(victim, [to], encrypted(victim, to), login=sender)
    assert client.transaction(victim, [to], encrypted(victim, to), login=victim).accepted


def test_outgoing_malformed_mail_gets_552(outgoing: MilterServer):
    sender = new_addr()
    huge = b"X-Big: " + b"a" * (300 << 10) + b"\r\n" + encrypted(sender, "a@b.test")
    answer = outgoing.client().transaction(sender, ["a@b.test"], huge, login=sender)
    assert answer.text.startswith("552 5.3.4 ")


def test_outgoing_large_mail_in_many_body_chunks(outgoing: MilterServer):
    sender, to = new_addr(), "a@other.test"
    message = testmail.to_bytes(testmail.make_encrypted_message(sender, [to], payload_size=3_000_000))
    assert outgoing.client().transaction(sender, [to], message, login=sender).accepted


def test_abort_starts_over(outgoing: MilterServer):
    client = outgoing.client()
    sender, to = new_addr(), "a@other.test"
    client.send(milter.SMFIC_MAIL, f"<{sender}>".encode() + b"\0")
    assert client.receive_answer().accepted
    client.send(milter.SMFIC_HEADER, b"Subject\0 half a mail\0")
    client.abort()
    assert client.transaction(sender, [to], encrypted(sender, to), login=sender).accepted


@pytest.mark.parametrize("garbage", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xffX", struct.pack("!I", 2) + b"Zz"])
def test_garbage_closes_the_connection_and_the_server_keeps_serving(outgoing: MilterServer, garbage: bytes):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(outgoing.path))
        sock.sendall(garbage)
        assert sock.recv(100) == b""  # closed without an answer: Postfix tempfails the session
    sender, to = new_addr(), "a@other.test"
    assert outgoing.client().transaction(sender, [to], encrypted(sender, to), login=sender).accepted


# --- incoming


def test_incoming_encrypted_mail_keeps_its_sender(incoming: MilterServer):
    sender, to = new_addr("other.test"), new_addr()
    answer = incoming.client().transaction(sender, [to], encrypted(sender, to))
    assert answer.accepted and answer.edits == []


def test_incoming_sender_differing_from_from_is_reset(incoming: MilterServer):
    sender, to = new_addr("other.test"), new_addr()
    answer = incoming.client().transaction("bounces+123@lists.other.test", [to], encrypted(sender, to))
    assert answer.accepted
    assert answer.edits == [(SMFIR_CHGFROM, b"<>\0")]


@pytest.mark.parametrize("mail_from,from_addr,reset", [
    ("a@x.test", "a@x.test", False), ("A@X.test", "a@x.test", False), ("", "mailer-daemon@x.test", False),
    ("b@x.test", "a@x.test", True)])
def test_resets_sender(mail_from: str, from_addr: str, reset: bool):
    assert resets_sender(mail_from, from_addr) is reset


def test_incoming_cleartext_to_a_protected_mailbox_is_refused(incoming: MilterServer, config: Config):
    to = new_addr()
    mailbox = config.mailboxes_dir / to
    mailbox.mkdir(parents=True)
    (mailbox / "enforceE2EEincoming").touch()
    sender = new_addr("other.test")
    answer = incoming.client().transaction(sender, [to], plain(sender, to))
    assert answer.text == "523 Encryption Needed: Invalid Unencrypted Mail"


def test_incoming_mailer_daemon_report_passes(incoming: MilterServer, config: Config):
    to = new_addr()
    (config.mailboxes_dir / to).mkdir(parents=True)
    (config.mailboxes_dir / to / "enforceE2EEincoming").touch()
    report = testmail.to_bytes(testmail.make_mailer_daemon_report("mailer-daemon@other.test", to))
    assert incoming.client().transaction("", [to], report).accepted


def test_incoming_without_from_is_refused(incoming: MilterServer):
    answer = incoming.client().transaction("a@other.test", [new_addr()], b"Subject: x\r\n\r\nhi\r\n")
    assert answer.text == "500 Invalid FROM header: "


@pytest.mark.parametrize("client_address", ["192.0.2.7", "192.0.2.8", "127.0.0.1"])
def test_incoming_domain_literal_from_any_client(tmp_path: Path, config: Config, client_address: str):
    """As upstream's filtermail 0.6: no DKIM key and no comparison with the client's address for
    a From at a domain literal, even where DKIM is checked."""
    with MilterServer(tmp_path / "dkim.sock", lambda: IncomingMilter(config, Keys({}))) as server:
        sender, to = "alice@[192.0.2.7]", new_addr()
        answer = server.client(client_address=client_address).transaction(sender, [to], encrypted(sender, to))
        assert answer.accepted, answer.text


def test_incoming_with_dkim_refuses_unsigned_mail(tmp_path: Path, config: Config):
    with MilterServer(tmp_path / "dkim.sock", lambda: IncomingMilter(config, Keys({}))) as server:
        sender, to = new_addr("other.test"), new_addr()
        answer = server.client().transaction(sender, [to], encrypted(sender, to))
        assert answer.text == NO_SIGNATURE


def test_incoming_with_dkim_accepts_an_aligned_signature(tmp_path: Path, config: Config, private_keys, keys):
    from test_dkimverify import signed

    with MilterServer(tmp_path / "dkim.sock", lambda: IncomingMilter(config, Keys(keys))) as server:
        client = server.client()
        sender, to = "x@a.test", new_addr()
        message = signed(encrypted(sender, to), private_keys["a.test"], "a.test")
        assert client.transaction(sender, [to], message).accepted
        forged = signed(encrypted("x@a.test", to), private_keys["b.test"], "b.test")
        assert client.transaction(sender, [to], forged).text == "554 5.7.1 No valid DKIM signature found"


# --- the console script


def filtermail_command() -> str:
    return str(Path(sys.executable).parent / "filtermail")


def wait_for_socket(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no milter socket {path}")


@pytest.mark.parametrize("mode,extra", [("outgoing-milter", []), ("incoming-milter", ["--skip-dkim"])])
def test_console_script_serves_and_removes_its_socket(make_ini, tmp_path: Path, mode: str, extra: list[str]):
    ini = make_ini(DOMAIN)
    path = tmp_path / f"{mode}.sock"
    path.write_text("stale socket of a killed daemon")
    process = subprocess.Popen([filtermail_command(), str(ini), mode, str(path), *extra],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_socket(path, process)
        assert path.stat().st_mode & 0o777 == 0o666
        sender, to = (new_addr(), "a@other.test") if mode == "outgoing-milter" else ("a@other.test", new_addr())
        client = MilterClient(str(path), timeout=TIMEOUT)
        assert client.transaction(sender, [to], encrypted(sender, to), login=sender).accepted
        assert not client.transaction(sender, [to], plain(sender, to), login=sender).accepted or mode != "outgoing-milter"
        client.close()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err
    assert "entering serving loop" in err and "Traceback" not in err, err
    assert not path.exists()


@pytest.mark.parametrize("argv", [["outgoing-milter"], ["outgoing-milter", "/s", "--skip-dkim"],
                                  ["incoming-milter", "/s", "--verbose"], ["sideways", "/s"]])
def test_console_script_usage(make_ini, argv: list[str]):
    result = subprocess.run([filtermail_command(), str(make_ini(DOMAIN)), *argv], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 2 and "usage: filtermail" in result.stderr


def test_each_mail_that_passes_is_logged_by_kind_in_upstreams_words(
    outgoing: MilterServer, incoming: MilterServer, config: Config, caplog: pytest.LogCaptureFixture
):
    """One line per mail that passed the encryption rule (chatmail-metrics counts them)."""
    caplog.set_level(logging.INFO, logger="filtermail")
    sender, to = new_addr(), new_addr("other.test")
    out = outgoing.client()
    out.transaction(sender, [to], encrypted(sender, to), login=sender)
    out.transaction(sender, [to], testmail.to_bytes(testmail.make_securejoin_request(sender, to)), login=sender)
    out.transaction(sender, [to], plain(sender, to), login=sender)
    stranger, local = new_addr("other.test"), new_addr()
    (config.mailboxes_dir / local).mkdir(parents=True)
    incoming.client().transaction(stranger, [local], encrypted(stranger, local))
    report = testmail.to_bytes(testmail.make_mailer_daemon_report("mailer-daemon@other.test", local))
    incoming.client().transaction("", [local], report)
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("Outgoing: Filtering encrypted mail.") == 1
    assert lines.count("Outgoing: Filtering unencrypted mail.") == 1  # the Secure-Join request
    assert lines.count("refused: 523 Encryption Needed: Invalid Unencrypted Mail") == 1
    assert lines.count("Incoming: Filtering encrypted mail.") == 1
    assert lines.count("Incoming: Filtering mailer-daemon message.") == 1
