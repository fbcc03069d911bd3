"""filtermail over SMTP: the ``filtermail`` console script as a subprocess between smtplib and an
aiosmtpd sink standing in for Postfix's re-injection port. Everything runs on 127.0.0.1."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from chatmaild import testmail
from chatmaild.filtermail import FilterSMTP, Reinjector, ReinjectError

DOMAIN = "chat.example.org"
MAX_MESSAGE_SIZE = 3_000_000
BURST = 3
TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: str
    mail_options: list[str] = field(default_factory=list)


@dataclass
class SinkHandler:
    """Records what it receives; ``rcpt_reply`` lets a test make it refuse recipients."""

    pipelining: bool = True
    rcpt_reply: str | None = None
    mail_replies: list[str] = field(default_factory=list)  # replies for the next MAIL commands
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.connections += 1
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(
            Received(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, session.peer[0],
                list(envelope.mail_options),
            )
        )
        return "250 OK"


class Sink:
    """An aiosmtpd server in a thread of the test process."""

    def __init__(self, port: int, pipelining: bool = True, smtputf8: bool = True) -> None:
        self.port = port
        self.smtputf8 = smtputf8
        self.handler = SinkHandler(pipelining=pipelining)
        self.controller: Controller | None = None

    def start(self) -> None:
        # hostname "127.0.0.1" is what the sink binds; server_hostname is its greeting name
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname="sink", data_size_limit=None,
            enable_SMTPUTF8=self.smtputf8,
        )
        self.controller.start()

    def stop(self) -> None:
        assert self.controller is not None
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink(free_port())
    sink.start()
    yield sink
    sink.stop()


def write_ini(path: Path, **params: object) -> Path:
    lines = ["[params]", f"mail_domain = {DOMAIN}"] + [f"{key} = {value}" for key, value in params.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def filtermail_command() -> str:
    return str(Path(sys.executable).parent / "filtermail")


def wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"filtermail exited with {process.returncode}: {log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"filtermail did not listen on {port}")


@dataclass
class Filtermail:
    port: int
    process: subprocess.Popen
    log_path: Path

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=TIMEOUT)

    def send(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
        with self.client() as client:
            client.sendmail(mail_from, rcpt_tos, data)


def start_filtermail(tmp_path: Path, mode: str, reinject_port: int, **params: object) -> Filtermail:
    port = free_port()
    port_key = "filtermail_smtp_port" if mode == "outgoing" else "filtermail_smtp_port_incoming"
    reinject_key = "postfix_reinject_port" if mode == "outgoing" else "postfix_reinject_port_incoming"
    ini = write_ini(
        tmp_path / f"chatmail-{mode}-{port}.ini",
        mailboxes_dir=tmp_path / "mail",
        max_message_size=MAX_MESSAGE_SIZE,
        **{port_key: port, reinject_key: reinject_port},
        **params,
    )
    log_path = tmp_path / f"filtermail-{mode}-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [filtermail_command(), str(ini), mode], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        wait_for_port(port, process, log_path)
    except BaseException:
        process.kill()
        process.wait(TIMEOUT)
        raise
    return Filtermail(port, process, log_path)


def stop_filtermail(filtermail: Filtermail) -> None:
    filtermail.process.terminate()
    try:
        filtermail.process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        filtermail.process.kill()
        filtermail.process.wait(TIMEOUT)
        pytest.fail("filtermail did not stop on SIGTERM")
    log = filtermail.log_path.read_text()
    assert filtermail.process.returncode == 0, log
    assert "entering serving loop" in log
    assert "Traceback" not in log, log


@pytest.fixture
def outgoing(tmp_path: Path, sink: Sink) -> Iterator[Filtermail]:
    filtermail = start_filtermail(
        tmp_path, "outgoing", sink.port,
        max_user_send_per_minute=60, max_user_send_burst_size=BURST,
    )
    yield filtermail
    stop_filtermail(filtermail)


@pytest.fixture
def incoming(tmp_path: Path, sink: Sink) -> Iterator[Filtermail]:
    filtermail = start_filtermail(tmp_path, "incoming", sink.port)
    yield filtermail
    stop_filtermail(filtermail)


_counter = iter(range(10**6))


def new_addr(domain: str = DOMAIN) -> str:
    """A fresh sender per test mail keeps the per-sender rate limit out of the way."""
    return f"user{next(_counter):05d}@{domain}"


def encrypted(mail_from: str, to: str, **kwargs) -> bytes:
    return testmail.to_bytes(testmail.make_encrypted_message(mail_from, to, **kwargs))


def plain(mail_from: str, to: str, **kwargs) -> bytes:
    return testmail.to_bytes(testmail.make_plain_message(mail_from, to, **kwargs))


def smtp_code(error: smtplib.SMTPException) -> tuple[int, str]:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        (code, text), = error.recipients.values()
        return code, text.decode()
    return error.smtp_code, error.smtp_error.decode()


def refusal(filtermail: Filtermail, mail_from: str, rcpt_tos: list[str], data: bytes) -> tuple[int, str]:
    with pytest.raises(smtplib.SMTPException) as excinfo:
        filtermail.send(mail_from, rcpt_tos, data)
    return smtp_code(excinfo.value)


# --- outgoing


def test_encrypted_mail_is_reinjected_byte_for_byte(outgoing: Filtermail, sink: Sink):
    sender, recipient = new_addr(), "bob@example.org"
    data = encrypted(sender, recipient)
    outgoing.send(sender, [recipient], data)
    assert len(sink.received) == 1
    assert sink.received[0].content == data
    assert (sink.received[0].mail_from, sink.received[0].rcpt_tos) == (sender, [recipient])


def test_large_encrypted_mail_with_dot_lines(outgoing: Filtermail, sink: Sink):
    sender, recipient = new_addr(), "bob@example.org"
    data = encrypted(sender, recipient, payload_size=2_000_000, extra_headers=["X-Dots: x"])
    # base64 lines never start with ".", so dots come from the header; also check the encoding
    data = data.replace(b"X-Dots: x\r\n", b"X-Dots: x\r\n .folded line starting with a dot\r\n")
    outgoing.send(sender, [recipient], data)
    assert sink.received[-1].content == data


def test_cleartext_is_refused_and_not_reinjected(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    code, text = refusal(outgoing, sender, ["bob@example.org"], plain(sender, "bob@example.org"))
    assert (code, text) == (523, "Encryption Needed: Invalid Unencrypted Mail")
    assert sink.received == []


def test_forged_from_is_refused(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    code, text = refusal(outgoing, sender, ["bob@example.org"], encrypted("forged@example.org", "bob@example.org"))
    assert (code, text) == (500, f"Invalid FROM <'forged@example.org'> for <{sender!r}>")
    assert sink.received == []


def test_securejoin_request_passes(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    data = testmail.to_bytes(testmail.make_securejoin_request(sender, "bob@example.org"))
    outgoing.send(sender, ["bob@example.org"], data)
    assert sink.received[-1].content == data


def test_rate_limit_after_burst(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    with outgoing.client() as client:
        for _ in range(BURST):
            client.sendmail(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
        assert (excinfo.value.smtp_code, excinfo.value.smtp_error) == (450, f"4.7.1: Too much mail from {sender}".encode())
        other = new_addr()
        client.sendmail(other, ["bob@example.org"], encrypted(other, "bob@example.org"))
    assert len(sink.received) == BURST + 1


def test_invalid_sender_address(outgoing: Filtermail):
    with outgoing.client() as client:
        client.ehlo()
        assert client.mail("no-at-sign") == (500, b"Invalid from address <'no-at-sign'>")


def test_smtputf8_and_8bitmime_are_passed_on(outgoing: Filtermail, sink: Sink):
    """Delta Chat sends MAIL FROM:<…> BODY=8BITMIME SMTPUTF8; Postfix passes both on to us."""
    sender = new_addr()
    with outgoing.client() as client:
        client.ehlo()
        assert "smtputf8" in client.esmtp_features
        client.sendmail(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"), ["BODY=8BITMIME", "SMTPUTF8"])
    assert sink.received[-1].mail_options == ["BODY=8BITMIME", "SMTPUTF8"]


def test_rcpt_parameters_are_ignored(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    with outgoing.client() as client:
        client.ehlo()
        assert client.mail(sender, ["BODY=8BITMIME", f"SIZE={MAX_MESSAGE_SIZE // 2}"])[0] == 250
        assert client.rcpt("bob@example.org", ["NOTIFY=NEVER", "ORCPT=rfc822;bob@example.org"])[0] == 250
        assert client.data(encrypted(sender, "bob@example.org"))[0] == 250
    assert sink.received[-1].rcpt_tos == ["bob@example.org"]


def test_too_large_mail_is_refused(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    with outgoing.client() as client:
        client.ehlo()
        assert client.mail(sender, [f"SIZE={MAX_MESSAGE_SIZE + 1}"])[0] == 552
    code, _ = refusal(outgoing, sender, ["bob@example.org"], encrypted(sender, "bob@example.org", payload_size=MAX_MESSAGE_SIZE))
    assert code == 552
    assert sink.received == []


def test_malformed_mail_gets_a_reply_and_server_keeps_serving(outgoing: Filtermail, sink: Sink):
    for junk in (
        b"\x00\xff\xfe garbage without headers\r\n",
        b"From: <{sender}>\r\nContent-Type: multipart/encrypted; boundary=\r\n\r\n--\r\n",
        b"From: <{sender}>\r\n" + b"X: " + b"a" * 500 + b"\r\n" * 3,
        b"From: <{sender}>\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";"
        b" boundary=b\r\n\r\n--b\r\n--b\r\n--b--\r\n",
        b"From: <{sender}>\r\n" + b"X-Long: " + b"a" * 900 + b"\r\n" + b"X-Many: b\r\n" * 30000,
    ):
        sender = new_addr()
        code, _ = refusal(outgoing, sender, ["bob@example.org"], junk.replace(b"{sender}", sender.encode()))
        assert 500 <= code < 600
    assert sink.received == []
    sender = new_addr()
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert len(sink.received) == 1


def raw_session(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.recv(1000)  # greeting
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_smtp_input(outgoing: Filtermail, sink: Sink):
    replies = raw_session(
        outgoing.port,
        b"HELLO there\r\n\xff\xfe\x00\r\n" + b"A" * 5000 + b"\r\nEHLO client.test\r\nMAIL FROM:<<>>\r\n"
        b"RCPT TO:<x@y>\r\nDATA\r\nQUIT\r\n",
    )
    codes = [line[:3] for line in replies.split(b"\r\n") if line[:3].isdigit() and line[3:4] == b" "]
    assert codes[:3] == [b"500", b"500", b"500"]
    assert codes[-1] == b"221"
    sender = new_addr()
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert len(sink.received) == 1


def test_client_hangup_mid_data(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    raw_session(outgoing.port, f"EHLO c.test\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nFrom: x\r\n".encode())
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert len(sink.received) == 1


def test_sink_down_gives_temporary_error(tmp_path: Path):
    filtermail = start_filtermail(tmp_path, "outgoing", free_port())
    try:
        sender = new_addr()
        code, text = refusal(filtermail, sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
        assert 400 <= code < 500, text
    finally:
        stop_filtermail(filtermail)


def test_sink_restart_is_survived(outgoing: Filtermail, sink: Sink):
    """A pooled connection that Postfix closed is replaced without failing the mail."""
    sender = new_addr()
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    sink.stop()
    sink.start()
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert len(sink.received) == 2


def test_connections_to_postfix_are_reused(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    for _ in range(BURST):
        outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert sink.handler.connections == 1


def test_postfix_refusal_is_passed_on(outgoing: Filtermail, sink: Sink):
    sink.handler.rcpt_reply = "550 5.1.1 <bob@example.org>: Recipient address rejected"
    sender = new_addr()
    code, text = refusal(outgoing, sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert (code, text) == (550, "5.1.1 <bob@example.org>: Recipient address rejected")
    sink.handler.rcpt_reply = None
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    assert len(sink.received) == 1


# --- incoming


def make_account(tmp_path: Path, addr: str, enforce: bool) -> None:
    maildir = tmp_path / "mail" / addr
    maildir.mkdir(parents=True)
    if enforce:
        (maildir / "enforceE2EEincoming").touch()


def test_incoming(tmp_path: Path, incoming: Filtermail, sink: Sink):
    enforcing, open_to_cleartext = new_addr(), new_addr()
    make_account(tmp_path, enforcing, enforce=True)
    make_account(tmp_path, open_to_cleartext, enforce=False)
    stranger = "stranger@example.net"

    code, _ = refusal(incoming, stranger, [enforcing], plain(stranger, enforcing))
    assert code == 523
    code, _ = refusal(incoming, stranger, [open_to_cleartext, enforcing.upper()], plain(stranger, enforcing))
    assert code == 523
    assert sink.received == []

    accepted = [
        ([open_to_cleartext], plain(stranger, open_to_cleartext)),
        ([enforcing], encrypted("someone.else@example.net", enforcing)),  # From may differ (forwarders)
        ([enforcing], testmail.to_bytes(testmail.make_securejoin_request(stranger, enforcing))),
        ([enforcing], testmail.to_bytes(testmail.make_mailer_daemon_report("MAILER-DAEMON@example.net", enforcing))),
    ]
    for rcpt_tos, data in accepted:
        incoming.send(stranger, rcpt_tos, data)
        assert sink.received[-1].content == data
    # a bounce comes with the null sender
    bounce = testmail.to_bytes(testmail.make_mailer_daemon_report("MAILER-DAEMON@example.net", enforcing))
    incoming.send("", [enforcing], bounce)
    assert (sink.received[-1].mail_from, sink.received[-1].content) == ("<>", bounce)  # aiosmtpd spells it so
    # upstream re-injects incoming mail from 127.0.0.2 (the DKIM milter tells directions apart by it)
    assert {r.peer for r in sink.received} == {"127.0.0.2"}
    # one line per accepted mail, upstream's wording (chatmail-metrics counts them)
    log = incoming.log_path.read_text()
    assert log.count("Incoming: Filtering unencrypted mail.") == 2  # cleartext-open, Secure-Join
    assert log.count("Incoming: Filtering encrypted mail.") == 1
    assert log.count("Incoming: Filtering mailer-daemon message.") == 2
    assert "Outgoing:" not in log


def test_accepted_outgoing_mail_is_logged_by_kind(outgoing: Filtermail, sink: Sink):
    sender = new_addr()
    outgoing.send(sender, ["bob@example.org"], encrypted(sender, "bob@example.org"))
    outgoing.send(sender, ["bob@example.org"], testmail.to_bytes(testmail.make_securejoin_request(sender, "bob@example.org")))
    refusal(outgoing, sender, ["bob@example.org"], plain(sender, "bob@example.org"))
    log = outgoing.log_path.read_text()
    assert log.count("Outgoing: Filtering encrypted mail.") == 1
    assert log.count("Outgoing: Filtering unencrypted mail.") == 1
    assert log.count("refused: 523 Encryption Needed") == 1


def test_incoming_has_no_rate_limit(incoming: Filtermail, sink: Sink):
    sender = "busy@example.net"
    with incoming.client() as client:
        for _ in range(BURST + 2):
            client.sendmail(sender, [new_addr()], encrypted(sender, "x@" + DOMAIN))
    assert len(sink.received) == BURST + 2


# --- the re-injection client on its own


def reinject(port: int, *args, **kwargs) -> None:
    async def run() -> None:
        reinjector = Reinjector(port)
        try:
            await reinjector.send(*args, **kwargs)
        finally:
            reinjector.close()

    asyncio.run(run())


@pytest.mark.parametrize(("pipelining", "smtputf8"), [(True, True), (False, True), (True, False)])
def test_reinjector(pipelining: bool, smtputf8: bool):
    sink = Sink(free_port(), pipelining=pipelining, smtputf8=smtputf8)
    sink.start()
    try:
        content = b"Subject: x\r\n\r\n.dot\r\n..two\r\n"
        reinject(sink.port, "a@x.org", ["b@y.org", "c@y.org"], content, mail_params=["BODY=8BITMIME", "SMTPUTF8"])
        # parameters are passed on only where the server announced the extension
        options = ["BODY=8BITMIME", "SMTPUTF8"] if smtputf8 else ["BODY=8BITMIME"]
        assert sink.received == [Received("a@x.org", ["b@y.org", "c@y.org"], content, "127.0.0.1", options)]
    finally:
        sink.stop()


def test_reinjector_replaces_a_connection_that_got_421(sink: Sink):
    async def run() -> None:
        reinjector = Reinjector(sink.port)
        await reinjector.send("a@x.org", ["b@y.org"], b"1\r\n", mail_params=[])
        sink.handler.mail_replies.append("421 4.4.2 sink Error: timeout exceeded")
        await reinjector.send("a@x.org", ["b@y.org"], b"2\r\n", mail_params=[])
        reinjector.close()

    asyncio.run(run())
    assert [r.content for r in sink.received] == [b"1\r\n", b"2\r\n"]
    assert sink.handler.connections == 2


def test_reinjector_connection_refused():
    with pytest.raises(ReinjectError) as excinfo:
        reinject(free_port(), "a@x.org", ["b@y.org"], b"x\r\n", mail_params=[])
    assert excinfo.value.reply.startswith("451 4.4.2 ")


def test_reinjector_silent_server_times_out(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("chatmaild.filtermail.REINJECT_TRANSACTION_TIMEOUT", 0.5)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        with pytest.raises(ReinjectError) as excinfo:
            reinject(server.getsockname()[1], "a@x.org", ["b@y.org"], b"x\r\n", mail_params=[])
        assert time.monotonic() - started < 5
    assert excinfo.value.reply.startswith("451 ")


# --- reading DATA in blocks (FilterSMTP.smtp_DATA)


class RecordingHandler:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.contents.append(envelope.original_content)
        return "250 OK"


class FilterController(Controller):
    def factory(self):
        return FilterSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def data_server() -> Iterator[tuple[int, RecordingHandler]]:
    handler = RecordingHandler()
    controller = FilterController(
        handler, hostname="127.0.0.1", port=free_port(), server_hostname="filter", data_size_limit=200_000
    )
    controller.start()
    yield controller.port, handler
    controller.stop()


def send_data_in_pieces(port: int, pieces: list[bytes]) -> list[bytes]:
    """Run one transaction whose DATA payload arrives in the given TCP writes; return reply lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = s.makefile("rb")
        reader.readline()
        for command in (b"EHLO c.test\r\n", b"MAIL FROM:<a@b.org>\r\n", b"RCPT TO:<c@d.org>\r\n", b"DATA\r\n"):
            s.sendall(command)
            while reader.readline()[3:4] == b"-":  # skip to the last line of the reply
                pass
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.005)
        reply = reader.readline()
        s.sendall(b"QUIT\r\n")
        return [reply, reader.readline()]


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        ([b".\r\n"], b""),
        ([b"a\r\n.\r\n"], b"a\r\n"),
        ([b"Hello.\r\nBye.\r\n.\r\n"], b"Hello.\r\nBye.\r\n"),
        ([b"..\r\n...x\r\n.y\r\n.\r\n"], b".\r\n..x\r\ny\r\n"),
        ([b"a\r\n", b".", b"\r", b"\n"], b"a\r\n"),
        ([b"a\r", b"\n.\r\n"], b"a\r\n"),
        ([b"a.\r", b"\n.\r\nQ"], b"a.\r\n"),  # bytes after the end stay for the next command
        ([b"x" * 150_000 + b"\r\n.\r\n"], b"x" * 150_000 + b"\r\n"),
        ([b"a\r\n" + b"y." * 40_000 + b"\r\n.", b"\r\n"], b"a\r\n" + b"y." * 40_000 + b"\r\n"),
        ([b"bare\nlf\n.\nstill\r\n.\r\n"], b"bare\nlf\n.\nstill\r\n"),
    ],
    ids=["empty", "one-line", "dot-line-ends", "stuffed", "split-end", "split-crlf", "pipelined-rest",
         "long-line", "long-dots", "bare-lf"],
)
def test_data_is_read_exactly(data_server, wire: list[bytes], content: bytes):
    port, handler = data_server
    replies = send_data_in_pieces(port, wire)
    if wire[-1].endswith(b"Q"):
        assert replies[0].startswith(b"250")
        assert replies[1].startswith(b"500")  # "QQUIT" is not a command
    else:
        assert replies == [b"250 OK\r\n", b"221 Bye\r\n"]
    assert handler.contents == [content]


def test_data_over_the_size_limit(data_server):
    port, handler = data_server
    replies = send_data_in_pieces(port, [(b"z" * 100 + b"\r\n") * 3000, b".\r\n"])
    assert replies == [b"552 Error: Too much mail data\r\n", b"221 Bye\r\n"]
    assert send_data_in_pieces(port, [b"z" * 100 + b"\r\n.\r\n"])[0] == b"250 OK\r\n"
    assert handler.contents == [b"z" * 100 + b"\r\n"]
