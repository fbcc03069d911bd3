"""chatmail-mxdeliv: relay-to-relay delivery over HTTPS, for relays whose port 25 is blocked.

The protocol, as chatmail relays 1.10-1.12 speak it (filtermail 0.6): ``POST https://<MX host>/mxdeliv``
with the message as sent over SMTP (DKIM-signed by the sending relay) as the body and the
envelope in headers: ``X-Mail-From`` (left out for the null sender of a bounce) and one
``X-Mail-To`` per recipient. The body of the answer is an SMTP reply line; status 200 means the
message was accepted, any other status that it was not.

``chatmail-mxdeliv INI incoming`` is the receiving side, behind nginx's ``/mxdeliv`` route: HTTP on
127.0.0.1:``filtermail_http_port_incoming``. Each request becomes one SMTP transaction with Postfix's
loopback smtpd on ``postfix_mxdeliv_port``, which runs the checks of port 25 (filtermail's
incoming milter: encryption, the DKIM signature of the From domain) before the message is queued,
so mail arriving over HTTPS meets exactly the rules of mail arriving over SMTP. Answers:

- 200 with Postfix's ``250 …``: accepted;
- 400 with a ``5xx …`` reply: refused for good, by Postfix and its checks, or because the request
  is malformed (``501 5.5.4 …``); 503 with a ``4xx …`` reply: try again later;
- 405 (not POST), 411 (no Content-Length), 413 (``552 5.3.4 …``: over ``max_message_size``),
  431 (header block over 64 KiB).

A recipient refused at RCPT refuses the whole request, nothing is delivered: the sender retries
every recipient or falls back to SMTP, which answers per recipient.

``chatmail-mxdeliv INI outgoing --ca-file FILE`` is the sending side: an SMTP server on
127.0.0.1:``mxdeliv_fallback_port`` that Postfix uses as its ``smtp_fallback_relay``, so mail for a
relay whose port 25 cannot be reached arrives here and is POSTed to ``https://<MX host>/mxdeliv``,
MX hosts in order of preference. Certificates are verified against FILE, except for domains
starting with ``_`` and IP literals, whose relays have self-signed ones (as upstream). The answer
becomes this server's reply: Postfix bounces the message on 5xx and retries on 4xx. Upstream
tries HTTPS first and SMTP second; here SMTP comes first and HTTPS is the fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import ipaddress
import logging
import re
import signal
import smtplib
import ssl
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from .config import Config, ConfigError, read_config
from .dnszone import DnsError, Resolver, resolver_from_resolv_conf

log = logging.getLogger("mxdeliv")

MODES = ("incoming", "outgoing")
PATH = "/mxdeliv"
FROM_HEADER = "x-mail-from"
TO_HEADER = "x-mail-to"
MAX_HEAD = 64 * 1024  # request line and headers
HEAD_TIMEOUT = 30.0
BODY_TIMEOUT = 120.0
SMTP_TIMEOUT = 60.0  # per SMTP command to Postfix (its proxy filter answers within 100 s)
HTTPS_TIMEOUT = 60.0  # per connection attempt and read, as upstream's sending side
WORKERS = 32  # concurrent SMTP transactions / HTTPS requests (blocking clients in threads)
REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 411: "Length Required",
           413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


class BadRequest(Exception):
    """A request answered without talking to Postfix: HTTP status and SMTP-style reply."""

    def __init__(self, status: int, reply: str) -> None:
        super().__init__(reply)
        self.status = status
        self.reply = reply


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-case, in order, repeated names kept

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


# --- rules (pure)


def parse_head(data: bytes) -> Head:
    """The request line and header fields of an HTTP/1.x request head (without the final
    CRLF CRLF). UTF-8: addresses may be internationalized (SMTPUTF8)."""
    try:
        lines = data.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        raise BadRequest(400, "501 5.5.2 Request head is not UTF-8") from None
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, "501 5.5.2 Not an HTTP request line") from None
    if not re.fullmatch(r"HTTP/1\.[01]", version):
        raise BadRequest(400, f"501 5.5.2 Unsupported HTTP version {version!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise BadRequest(400, f"501 5.5.2 Malformed header line {line[:80]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return Head(method, target, headers)


# an address as it may stand between < and > in an SMTP command: no spaces or control
# characters (they would end or change the command), brackets only around a domain literal
_ATOMS = r'[^\x00-\x20\x7f<>()\[\]\\,;:"@]+'
_ADDRESS = re.compile(rf"{_ATOMS}@(?:{_ATOMS}|\[[^\x00-\x20\x7f\[\]\\]+\])")


def envelope_from_head(head: Head) -> tuple[str, list[str]]:
    """(mail_from, recipients) from X-Mail-From and the X-Mail-To headers."""
    senders = head.values(FROM_HEADER)
    if len(senders) > 1:
        raise BadRequest(400, "501 5.5.4 More than one X-Mail-From header")
    mail_from = senders[0] if senders else ""
    if mail_from and not _ADDRESS.fullmatch(mail_from):
        raise BadRequest(400, f"501 5.1.7 Bad sender address syntax in X-Mail-From: {mail_from[:80]!r}")
    recipients = [value for header in head.values(TO_HEADER) for value in _split(header)]
    if not recipients:
        raise BadRequest(400, "501 5.5.4 No X-Mail-To header: name each recipient in one")
    for rcpt in recipients:
        if not _ADDRESS.fullmatch(rcpt):
            raise BadRequest(400, f"501 5.1.3 Bad recipient address syntax in X-Mail-To: {rcpt[:80]!r}")
    return mail_from, recipients


def _split(header: str) -> list[str]:
    # HTTP allows several values of a repeated field in one, comma-separated
    return [part.strip() for part in header.split(",") if part.strip()]


def content_length(head: Head, limit: int) -> int:
    if head.values("transfer-encoding"):
        raise BadRequest(411, "501 5.5.4 Send the message with a Content-Length, not chunked")
    lengths = head.values("content-length")
    if len(lengths) != 1 or not lengths[0].isdigit():
        raise BadRequest(411, "501 5.5.4 Content-Length missing or malformed")
    length = int(lengths[0])
    if length > limit:
        raise BadRequest(413, "552 5.3.4 Message size exceeds fixed limit")
    return length


def status_for_reply(code: int) -> int:
    """The HTTP status that carries an SMTP reply code."""
    if 200 <= code < 300:
        return 200
    return 503 if 400 <= code < 500 else 400


def smtp_line(code: int, text: str | bytes) -> str:
    """An SMTP reply as one line (a multi-line text joined)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def with_crlf(body: bytes) -> bytes:
    """The message with every line ending in CRLF (the form DKIM signed it in)."""
    return re.sub(rb"\r?\n", b"\r\n", body)


def reply_from_http(status: int, body: bytes) -> tuple[int, str] | None:
    """The SMTP reply in an /mxdeliv answer; None when the answer holds none (e.g. a web
    server's 404 page: that host does not take mail over HTTPS)."""
    text = " ".join(body.decode("utf-8", "replace").split())
    match = re.match(r"([245][0-9][0-9])[ -]?(.*)", text)
    if 200 <= status < 300:
        return 250, match.group(2) if match else text
    if match and match.group(1)[0] in "45":
        return int(match.group(1)), match.group(2)
    return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def ip_literal(domain: str) -> str | None:
    """The address of a domain literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def verifies_certificates(domain: str) -> bool:
    """Upstream's rule: relays of domains starting with "_" and of IP literals have self-signed
    certificates (no public CA signs such names)."""
    return not (domain.startswith("_") or ip_literal(domain) is not None)


def mx_hosts(domain: str, mx_records: Sequence[str]) -> list[str]:
    """Hosts to try, in order of MX preference; the domain itself without MX records (RFC 5321
    section 5.1); none for a null MX (RFC 7505: the domain takes no mail)."""
    preferences = []
    for record in mx_records:
        preference, _, host = record.partition(" ")
        preferences.append((int(preference), host.rstrip(".").lower()))
    if any(host == "" for _, host in preferences):
        return []
    return [host for _, host in sorted(preferences)] or [domain]


# --- receiving: HTTP in, SMTP to Postfix


def relay_to_postfix(
    port: int, mail_from: str, recipients: Sequence[str], message: bytes
) -> tuple[int, str]:
    """One SMTP transaction with Postfix on 127.0.0.1:``port``; the first refusal or the final
    reply. Blocking (runs in a worker thread)."""
    options = []
    if not message.isascii():
        options.append("BODY=8BITMIME")
    if not (mail_from + "".join(recipients)).isascii():
        options.append("SMTPUTF8")
    try:
        # the client is this host, whatever relay the message came from
        with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=SMTP_TIMEOUT) as smtp:
            code, text = smtp.ehlo()
            if code != 250:
                return code, smtp_line(code, text)
            code, text = smtp.mail(mail_from, options)
            if code != 250:
                return code, smtp_line(code, text)
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    smtp.rset()
                    return code, smtp_line(code, text)
            code, text = smtp.data(message)
            return code, smtp_line(code, text)
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, smtp_line(e.smtp_code, e.smtp_error)
    except (OSError, smtplib.SMTPException) as e:
        log.warning("Postfix on port %d: %s", port, e)
        return 451, smtp_line(451, f"4.4.2 Handing the message to Postfix failed: {e}")


class Receiver:
    """Serves the HTTP side of /mxdeliv, one request per connection."""

    def __init__(self, config: Config, executor: ThreadPoolExecutor) -> None:
        self.config = config
        self.executor = executor

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, reply = await self._answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            writer.close()  # the client went away or stalled: nobody to answer
            return
        except Exception:
            log.exception("handling a request failed")
            status, reply = 500, "451 4.3.0 Internal error in chatmail-mxdeliv"
        body = (reply + "\n").encode()
        head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return 431, "501 5.5.2 Header block too large"
        try:
            head = parse_head(raw[:-4])
            if head.method != "POST":
                raise BadRequest(405, f"501 5.5.1 {head.method} is not allowed, POST the message")
            length = content_length(head, self.config.max_message_size)
            mail_from, recipients = envelope_from_head(head)
        except BadRequest as e:
            log.info("refused request: %s %s", e.status, e.reply)
            return e.status, e.reply
        message = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
        code, reply = await asyncio.get_running_loop().run_in_executor(
            self.executor, relay_to_postfix, self.config.postfix_mxdeliv_port, mail_from,
            recipients, with_crlf(message))
        log.info("from <%s> to %d recipient(s), %d bytes: %s", mail_from, len(recipients),
                 length, reply)
        return status_for_reply(code), reply


# --- sending: SMTP in (Postfix's fallback relay), HTTPS out


def tls_context(domain: str, ca_file: str) -> ssl.SSLContext:
    if verifies_certificates(domain):
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def post_message(host: str, port: int, context: ssl.SSLContext, mail_from: str,
                 recipients: Sequence[str], message: bytes) -> tuple[int, bytes]:
    """POST the message to https://host:port/mxdeliv; (status, body). Blocking."""
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=HTTPS_TIMEOUT)
    try:
        connection.putrequest("POST", PATH)
        # UTF-8, not http.client's Latin-1: addresses may be internationalized
        if mail_from:
            connection.putheader("X-Mail-From", mail_from.encode())
        for rcpt in recipients:
            connection.putheader("X-Mail-To", rcpt.encode())
        connection.putheader("Content-Type", "message/rfc822")
        connection.putheader("Content-Length", str(len(message)))
        connection.endheaders(message)
        response = connection.getresponse()
        return response.status, response.read(64 * 1024)
    finally:
        connection.close()


class Sender:
    """Delivers one SMTP transaction (one recipient domain) over HTTPS."""

    def __init__(self, ca_file: str, resolver: Resolver, port: int = 443) -> None:
        self.ca_file = ca_file
        self.resolver = resolver
        self.port = port

    def deliver(self, mail_from: str, recipients: Sequence[str], message: bytes) -> str:
        """The SMTP reply for Postfix. Blocking."""
        domain = domain_of(recipients[0])
        literal = ip_literal(domain)
        try:
            hosts = [literal] if literal else mx_hosts(domain, self.resolver.query(domain, "MX"))
        except DnsError as e:
            return f"451 4.4.3 MX lookup for {domain} failed: {e}"
        if not hosts:
            return f"556 5.1.10 {domain} takes no mail (null MX)"
        context = tls_context(domain, self.ca_file)
        failures = []
        for host in hosts:
            try:
                status, body = post_message(host, self.port, context, mail_from, recipients,
                                            message)
            except (OSError, http.client.HTTPException) as e:
                failures.append(f"{host}: {e}")
                continue
            reply = reply_from_http(status, body)
            if reply is None:  # not an /mxdeliv answer: try the next host
                failures.append(f"{host}: HTTP {status} without an SMTP reply")
                continue
            code, text = reply
            if code == 250:
                return f"250 2.0.0 Delivered over HTTPS to {host}: {text}"
            return f"{code} {text} (HTTPS delivery to {host})"
        return "451 4.4.1 No HTTPS delivery to " + domain + ": " + "; ".join(failures)


class SenderHandler:
    """aiosmtpd handler: one recipient domain per transaction, delivered by Sender."""

    def __init__(self, sender: Sender, executor: ThreadPoolExecutor) -> None:
        self.sender = sender
        self.executor = executor

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if envelope.rcpt_tos and domain_of(address) != domain_of(envelope.rcpt_tos[0]):
            return "452 4.5.3 One recipient domain per transaction"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # aiosmtpd keeps a bounce's null sender as "<>"
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        reply = await asyncio.get_running_loop().run_in_executor(
            self.executor, self.sender.deliver, mail_from, list(envelope.rcpt_tos),
            bytes(envelope.original_content or b""))
        log.info("from <%s> to %s: %s", envelope.mail_from, ", ".join(envelope.rcpt_tos), reply)
        return reply


# --- the daemon


async def serve(config: Config, mode: str, ca_file: str | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="mxdeliv")
    if mode == "incoming":
        port = config.filtermail_http_port_incoming
        server = await asyncio.start_server(Receiver(config, executor).handle, "127.0.0.1", port,
                                            limit=MAX_HEAD)
    else:
        resolver = Resolver(resolver_from_resolv_conf(Path("/etc/resolv.conf").read_text()))
        handler = SenderHandler(Sender(ca_file or "", resolver), executor)
        port = config.mxdeliv_fallback_port
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="localhost", ident="chatmail-mxdeliv",
                         data_size_limit=config.max_message_size, enable_SMTPUTF8=True,
                         loop=loop),
            "127.0.0.1", port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("chatmail-mxdeliv %s on 127.0.0.1:%d", mode, port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        executor.shutdown(wait=False, cancel_futures=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Relay-to-relay delivery over HTTPS: incoming (/mxdeliv behind nginx) or outgoing
    (Postfix's fallback relay)."""
    parser = argparse.ArgumentParser(prog="chatmail-mxdeliv", description=main.__doc__)
    parser.add_argument("chatmail_ini", type=Path, help="path of chatmail.ini")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--ca-file", help="CA bundle that verifies other relays (outgoing)")
    args = parser.parse_args(argv)
    if args.mode == "outgoing" and not args.ca_file:
        parser.error("outgoing needs --ca-file")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: every command at INFO
    try:
        config = read_config(args.chatmail_ini)
    except ConfigError as e:
        log.error("%s", e)
        return 1
    try:
        asyncio.run(serve(config, args.mode, args.ca_file))
    except OSError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
