"""chatmail-mxdeliv: the request and envelope rules, the receiving daemon (the console script
between http.client and an aiosmtpd sink standing in for Postfix) and the sending side against an
HTTPS server of its own. Everything runs on 127.0.0.1."""

from __future__ import annotations

import http.client
import http.server
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from test_notifier import free_port

from chatmaild import testmail
from chatmaild.dnszone import DnsError
from chatmaild.mxdeliv import (
    BadRequest,
    Head,
    Sender,
    SenderHandler,
    content_length,
    envelope_from_head,
    ip_literal,
    mx_hosts,
    parse_head,
    relay_to_postfix,
    reply_from_http,
    status_for_reply,
    verifies_certificates,
    with_crlf,
)

TIMEOUT = 10.0
RCPT = "abcdefghi@chat.example.org"


def head(*headers: tuple[str, str], method: str = "POST") -> Head:
    return Head(method, "/mxdeliv", [(name.lower(), value) for name, value in headers])


# --- rules


def test_parse_head() -> None:
    parsed = parse_head(b"POST /mxdeliv HTTP/1.0\r\nX-Mail-To:  a@b.test \r\nX-MAIL-TO: c@d.test")
    assert (parsed.method, parsed.target) == ("POST", "/mxdeliv")
    assert parsed.values("x-mail-to") == ["a@b.test", "c@d.test"]


@pytest.mark.parametrize("raw", [b"POST /mxdeliv", b"POST /mxdeliv HTTP/2", b"\x16\x03\x01\xff tls",
                                 b"POST / HTTP/1.1\r\nno colon here", b"POST / HTTP/1.1\r\nbad name: x",
                                 b"POST / HTTP/1.1\r\n folded: x"])
def test_malformed_heads_are_bad_requests(raw: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(raw)
    assert refused.value.status == 400 and refused.value.reply.startswith("501 5.5.2 ")


def test_envelope_from_headers() -> None:
    assert envelope_from_head(head(("X-Mail-From", "a@x.test"), ("X-Mail-To", RCPT))) == (
        "a@x.test", [RCPT])
    # a bounce has no X-Mail-From: the null sender
    assert envelope_from_head(head(("X-Mail-To", RCPT))) == ("", [RCPT])
    # one header per recipient, or several in one (HTTP's list syntax); domain literals
    to = head(("X-Mail-To", "a@x.test, b@x.test"), ("X-Mail-To", "c@[192.0.2.1]"))
    assert envelope_from_head(to)[1] == ["a@x.test", "b@x.test", "c@[192.0.2.1]"]


@pytest.mark.parametrize(("headers", "reply"), [
    ((), "501 5.5.4 No X-Mail-To header"),
    ((("X-Mail-From", "a@x.test"), ("X-Mail-From", "b@x.test"), ("X-Mail-To", RCPT)),
     "501 5.5.4 More than one X-Mail-From"),
    ((("X-Mail-From", "a@x.test> BODY=8BITMIME"), ("X-Mail-To", RCPT)), "501 5.1.7 "),
    ((("X-Mail-To", "a b@x.test"),), "501 5.1.3 "),
    ((("X-Mail-To", "a@x.test>\x00RCPT TO:<c@x.test"),), "501 5.1.3 "),
    ((("X-Mail-To", "nodomain"),), "501 5.1.3 "),
    ((("X-Mail-To", "a@[192.0.2.1"),), "501 5.1.3 "),
])
def test_bad_envelopes_are_refused_before_smtp(headers, reply: str) -> None:
    with pytest.raises(BadRequest) as refused:
        envelope_from_head(head(*headers))
    assert refused.value.status == 400 and refused.value.reply.startswith(reply)


@pytest.mark.parametrize(("headers", "status"), [
    ((), 411), ((("Content-Length", "12x"),), 411), ((("Content-Length", "1"), ("Content-Length", "1")), 411),
    ((("Transfer-Encoding", "chunked"),), 411), ((("Content-Length", "101"),), 413),
])
def test_content_length(headers, status: int) -> None:
    assert content_length(head(("Content-Length", "100")), 100) == 100
    with pytest.raises(BadRequest) as refused:
        content_length(head(*headers), 100)
    assert refused.value.status == status


def test_replies_and_statuses() -> None:
    assert [status_for_reply(code) for code in (250, 451, 452, 523, 550, 554)] == [
        200, 503, 503, 400, 400, 400]
    assert reply_from_http(200, b"250 OK\n") == (250, "OK")
    assert reply_from_http(400, b"550 5.7.0 no DKIM\r\n signature data\n") == (
        550, "5.7.0 no DKIM signature data")
    assert reply_from_http(503, b"451 4.4.2 later") == (451, "4.4.2 later")
    # a web server without /mxdeliv: no SMTP reply in its answer
    assert reply_from_http(404, b"<html>404 Not Found</html>") is None
    assert reply_from_http(400, b"250 not an error") is None


def test_line_ends_become_crlf() -> None:
    assert with_crlf(b"a\nb\r\nc\n\nd") == b"a\r\nb\r\nc\r\n\r\nd"


def test_targets_and_certificate_rule() -> None:
    assert ip_literal("[192.0.2.1]") == "192.0.2.1"
    assert ip_literal("[IPv6:2001:DB8::1]") == "2001:db8::1"
    assert ip_literal("chat.test") is ip_literal("[not an address]") is None
    assert [verifies_certificates(d) for d in ("chat.test", "_r1.test", "[192.0.2.1]", "a_b.test")] \
        == [True, False, False, True]
    assert mx_hosts("x.test", ["20 b.x.test.", "10 A.x.test."]) == ["a.x.test", "b.x.test"]
    assert mx_hosts("x.test", []) == ["x.test"]  # implicit MX
    assert mx_hosts("x.test", ["0 ."]) == []  # null MX


# --- the receiving daemon against a stand-in for Postfix


@dataclass
class Sink:
    """Records transactions; ``rcpt_reply`` refuses recipients, ``data_reply`` the message."""

    rcpt_reply: str | None = None
    data_reply: str = "250 2.0.0 Ok: queued as 1234"
    received: list[tuple[str, list[str], bytes, list[str]]] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content, list(envelope.mail_options)))
        return self.data_reply


@dataclass
class Receiving:
    port: int
    sink: Sink
    log: Path

    def request(self, method: str, headers: list[tuple[str, str]], body: bytes = b"",
                length: bool = True) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        connection.putrequest(method, "/mxdeliv", skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value.encode())
        if length:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read().decode()

    def post(self, body: bytes, *recipients: str, sender: str | None = "a@x.test") -> tuple[int, str]:
        headers = [("X-Mail-From", sender)] if sender is not None else []
        return self.request("POST", headers + [("X-Mail-To", r) for r in recipients], body)


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert process.poll() is None, log.read_text()
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


@pytest.fixture
def receiving(make_ini: Callable[..., Path], tmp_path: Path) -> Iterator[Receiving]:
    http_port, postfix_port = free_port(), free_port()
    ini = make_ini(filtermail_http_port_incoming=http_port, postfix_mxdeliv_port=postfix_port,
                   max_message_size=100_000)
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=postfix_port, enable_SMTPUTF8=True)
    controller.start()
    log = tmp_path / "mxdeliv.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("chatmail-mxdeliv")), str(ini), "incoming"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port, process, log)
        yield Receiving(http_port, sink, log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        controller.stop()


def test_a_post_becomes_one_smtp_transaction(receiving: Receiving) -> None:
    message = testmail.to_bytes(testmail.make_encrypted_message("a@x.test", [RCPT]))
    as_lf = message.replace(b"\r\n", b"\n") + "Ümlaut\n".encode()
    status, reply = receiving.post(as_lf, RCPT, "other1234@chat.example.org")
    assert (status, reply) == (200, "250 2.0.0 Ok: queued as 1234\n")
    [(mail_from, rcpts, content, options)] = receiving.sink.received
    assert (mail_from, rcpts) == ("a@x.test", [RCPT, "other1234@chat.example.org"])
    assert content == with_crlf(as_lf)  # CRLF line ends, as DKIM signed it
    assert options == ["BODY=8BITMIME"]


def test_internationalized_addresses_go_on_as_smtputf8(receiving: Receiving) -> None:
    assert receiving.post(b"x\r\n", "jörg@chat.example.org", sender="ä@x.test")[0] == 200
    [(mail_from, rcpts, _, options)] = receiving.sink.received
    assert (mail_from, rcpts) == ("ä@x.test", ["jörg@chat.example.org"])
    assert options == ["SMTPUTF8"]


def test_a_bounce_has_the_null_sender(receiving: Receiving) -> None:
    assert receiving.post(b"Subject: x\r\n\r\nbody\r\n", RCPT, sender=None)[0] == 200
    assert receiving.sink.received[0][0] == "<>"  # aiosmtpd's way of saying MAIL FROM:<>


@pytest.mark.parametrize(("refusal", "status"), [("550 5.1.1 no such user", 400),
                                                  ("450 4.2.0 try later", 503)])
def test_a_refused_recipient_refuses_the_request(receiving: Receiving, refusal: str,
                                                 status: int) -> None:
    receiving.sink.rcpt_reply = refusal
    assert receiving.post(b"x\r\n", RCPT) == (status, refusal + "\n")
    assert receiving.sink.received == []


def test_the_final_reply_is_passed_on(receiving: Receiving) -> None:
    receiving.sink.data_reply = "523 Encryption Needed: Invalid Unencrypted Mail"
    assert receiving.post(b"x\r\n", RCPT) == (400, "523 Encryption Needed: Invalid Unencrypted Mail\n")


def test_malformed_requests_get_clear_answers(receiving: Receiving) -> None:
    assert receiving.request("GET", []) == (405, "501 5.5.1 GET is not allowed, POST the message\n")
    assert receiving.request("POST", [("X-Mail-To", RCPT)], length=False)[0] == 411
    status, reply = receiving.post(b"x" * 100_001, RCPT)
    assert (status, reply) == (413, "552 5.3.4 Message size exceeds fixed limit\n")
    assert receiving.post(b"x\r\n")[0] == 400
    assert receiving.request("POST", [("X-Big", "y" * 70_000), ("X-Mail-To", RCPT)])[0] == 431
    assert receiving.sink.received == []
    assert receiving.post(b"x\r\n", RCPT)[0] == 200  # still serving


def test_postfix_down_means_try_later() -> None:
    code, reply = relay_to_postfix(free_port(), "a@x.test", [RCPT], b"x\r\n")
    assert code == 451 and reply.startswith("451 4.4.2 Handing the message to Postfix failed")
    assert status_for_reply(code) == 503


# --- the sending side against an HTTPS server of its own


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Peer:
    """An HTTPS server standing in for another relay's /mxdeliv."""

    port: int
    answer: tuple[int, bytes] = (200, b"250 OK\n")
    requests: list[dict] = field(default_factory=list)


@pytest.fixture
def peer(certificate: tuple[Path, Path]) -> Iterator[Peer]:
    state = Peer(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            def utf8(name: str) -> list[str] | None:  # http.server reads headers as Latin-1
                values = self.headers.get_all(name)
                return None if values is None else [v.encode("latin-1").decode() for v in values]

            state.requests.append({"path": self.path, "from": utf8("X-Mail-From"),
                                   "to": utf8("X-Mail-To"), "body": body})
            status, text = state.answer
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class FakeResolver:
    def __init__(self, records: dict[str, list[str] | DnsError]) -> None:
        self.records = records

    def query(self, name: str, rtype: str) -> list[str]:
        assert rtype == "MX"
        found = self.records.get(name, [])
        if isinstance(found, DnsError):
            raise found
        return found


def sender(certificate, peer: Peer, records: dict, trusted: bool = True) -> Sender:
    ca = str(certificate[0]) if trusted else "/etc/ssl/certs/ca-certificates.crt"
    return Sender(ca, FakeResolver(records), port=peer.port)  # type: ignore[arg-type]


def test_delivers_to_the_mx_host_with_a_verified_certificate(certificate, peer: Peer) -> None:
    records = {"chat.test": ["10 localhost."]}
    to = ["a@chat.test", "jörg@chat.test"]
    reply = sender(certificate, peer, records).deliver("a@x.test", to, b"msg\r\n")
    assert reply == "250 2.0.0 Delivered over HTTPS to localhost: OK"
    assert peer.requests == [{"path": "/mxdeliv", "from": ["a@x.test"], "to": to,
                              "body": b"msg\r\n"}]
    # a bounce: no X-Mail-From at all
    sender(certificate, peer, records).deliver("", to, b"msg\r\n")
    assert peer.requests[1]["from"] is None


def test_certificates_are_verified_except_for_underscore_domains_and_literals(
        certificate, peer: Peer) -> None:
    records = {"chat.test": ["10 localhost."], "_r1.test": ["10 localhost."]}
    untrusting = sender(certificate, peer, records, trusted=False)
    refused = untrusting.deliver("a@x.test", ["a@chat.test"], b"m\r\n")
    assert refused.startswith("451 4.4.1 No HTTPS delivery to chat.test: localhost: ")
    assert "CERTIFICATE_VERIFY_FAILED" in refused
    assert untrusting.deliver("a@x.test", ["a@_r1.test"], b"m\r\n").startswith("250 ")
    assert untrusting.deliver("a@x.test", ["a@[127.0.0.1]"], b"m\r\n").startswith("250 ")
    assert len(peer.requests) == 2


def test_the_peers_refusal_becomes_the_reply(certificate, peer: Peer) -> None:
    peer.answer = (400, b"523 Encryption Needed: Invalid Unencrypted Mail\n")
    reply = sender(certificate, peer, {"chat.test": ["10 localhost."]}).deliver(
        "a@x.test", ["a@chat.test"], b"m\r\n")
    assert reply == "523 Encryption Needed: Invalid Unencrypted Mail (HTTPS delivery to localhost)"


def test_next_mx_host_when_one_has_no_mxdeliv(certificate, peer: Peer) -> None:
    peer.answer = (404, b"<html>Not Found</html>")
    records = {"chat.test": ["10 localhost.", "20 127.0.0.2."]}
    reply = sender(certificate, peer, records).deliver("a@x.test", ["a@chat.test"], b"m\r\n")
    # both tried in order: localhost answered without an SMTP reply, 127.0.0.2 refused
    assert reply.startswith("451 4.4.1 No HTTPS delivery to chat.test: "
                            "localhost: HTTP 404 without an SMTP reply; 127.0.0.2: ")
    assert len(peer.requests) == 1


def test_dns_answers(certificate, peer: Peer) -> None:
    records = {"none.test": ["0 ."], "broken.test": DnsError("server answered SERVFAIL")}
    deliver = sender(certificate, peer, records).deliver
    assert deliver("a@x.test", ["a@none.test"], b"m") == "556 5.1.10 none.test takes no mail (null MX)"
    assert deliver("a@x.test", ["a@broken.test"], b"m") == (
        "451 4.4.3 MX lookup for broken.test failed: server answered SERVFAIL")
    assert peer.requests == []


def test_smtp_side_takes_one_domain_per_transaction(certificate, peer: Peer) -> None:
    handler = SenderHandler(sender(certificate, peer, {"chat.test": ["10 localhost."]}),
                            ThreadPoolExecutor(2))
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.ehlo("postfix.test")
            client.mail("a@x.test")
            assert client.rcpt("a@chat.test")[0] == 250
            assert client.rcpt("b@other.test") == (452, b"4.5.3 One recipient domain per transaction")
            code, text = client.data(b"Subject: x\r\n\r\nm\r\n")
            assert (code, text) == (250, b"2.0.0 Delivered over HTTPS to localhost: OK")
            client.sendmail("", ["a@chat.test"], b"Subject: bounce\r\n\r\nm\r\n")
        assert peer.requests[0]["to"] == ["a@chat.test"]
        assert peer.requests[0]["from"] == ["a@x.test"]
        assert peer.requests[1]["from"] is None  # MAIL FROM:<> sends no X-Mail-From
    finally:
        controller.stop()
