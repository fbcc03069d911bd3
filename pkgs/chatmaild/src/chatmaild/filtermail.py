"""filtermail: only encrypted mail passes Postfix, as a milter or as a before-queue SMTP filter.

Two ways to run it, with the same rules (the pure functions check_outgoing/check_incoming below;
the OpenPGP/MIME structure checks are in chatmaild.encryption):

- ``filtermail INI_PATH outgoing-milter|incoming-milter SOCKET_PATH [--skip-dkim]``: a milter on a
  unix socket (Postfix ``smtpd_milters``: submission, port 25). Postfix passes each SMTP session
  through it and queues the mail itself: one pass through Postfix. This relay's module and harness
  run this. ``incoming-milter`` also verifies the DKIM signature of the From domain
  (chatmaild.dkimverify; ``--skip-dkim``: not, for relays without DNS such as VM tests) and resets
  an envelope sender that is not the From address to ``<>``.
- ``filtermail INI_PATH outgoing|incoming``: upstream 1.9.0's ``smtpd_proxy_filter``, unchanged.
  It serves SMTP on 127.0.0.1 (``filtermail_smtp_port`` / ``filtermail_smtp_port_incoming``) and
  re-injects every accepted mail unchanged to Postfix on 127.0.0.1 (``postfix_reinject_port`` /
  ``postfix_reinject_port_incoming``); Postfix only acknowledges its client's DATA once the
  re-injection was accepted, so nothing is queued twice or lost. For upstream-style
  configurations.

Replies (upstream's codes and texts where clients see them):

- ``450 4.7.1: Too much mail from <sender>`` at MAIL (outgoing): per-sender rate limit;
- ``500 Invalid from address <'…'>`` at MAIL (outgoing): envelope sender is not ``local@domain``;
- ``500 Invalid FROM <'from'> for <'sender'>`` (outgoing): From header differs from the envelope;
- ``523 Encryption Needed: Invalid Unencrypted Mail``: cleartext where it is not allowed;
- ``552 …``: the mail (``max_message_size``) or its header block (256 KiB) is too large;
- milter, incoming: ``500 Invalid FROM header``, ``554 5.7.1 No (valid) DKIM signature found``,
  ``451 4.4.3`` when a DKIM key cannot be looked up now;
- ``451 4.3.0`` for an unexpected error in filtermail, and (SMTP mode) ``451 4.4.2 Re-injection to
  Postfix failed: …`` when Postfix cannot be reached or does not answer in time: the mail is
  retried, never dropped; a refusal by Postfix is passed on with Postfix's own code and text. A
  milter that is down or does not answer makes Postfix defer (``milter_default_action =
  tempfail``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from . import encryption
from .accounts import InvalidAddress, get_mailbox
from .config import Config, ConfigError, read_config
from .dkimverify import KeyResolver, check_dkim
from .encryption import Entity, MalformedMessage
from .milter import INTERNAL_ERROR, SMFIF_CHGFROM, Message, MilterSession, Verdict, change_sender
from .ratelimit import SendRateLimiter

log = logging.getLogger("filtermail")

ENCRYPTION_NEEDED_523 = "523 Encryption Needed: Invalid Unencrypted Mail"
MODES = ("outgoing", "incoming")
MILTER_MODES = {"outgoing-milter": "outgoing", "incoming-milter": "incoming"}

# Postfix waits smtpd_proxy_timeout (100 s by default) for our reply; answer well before that.
REINJECT_CONNECT_TIMEOUT = 10.0
REINJECT_TRANSACTION_TIMEOUT = 60.0
# Idle re-injection connections kept open; Postfix's smtpd closes them after smtpd_timeout (300 s).
REINJECT_POOL_SIZE = 8
REINJECT_MAX_IDLE = 60.0
WRITE_BLOCK_SIZE = 1 << 18
# MAIL parameters passed on to Postfix (if it announces the extension): they describe the content
FORWARDED_MAIL_PARAMS = {"BODY=8BITMIME": "8BITMIME", "SMTPUTF8": "SMTPUTF8"}


# --- rules: pure functions from (config, envelope, parsed mail) to an error reply or None


def log_filtered(direction: str, message: Entity) -> None:
    """Upstream's log line for a mail that passed the encryption rule ("Incoming: Filtering
    encrypted mail."); chatmail-metrics counts it."""
    kind = encryption.mail_kind(message)
    log.info("%s: Filtering %s %s.", direction, kind, "message" if kind == "mailer-daemon" else "mail")


def check_sender_address(address: str) -> str | None:
    """MAIL FROM must be local@domain (exactly one "@")."""
    if address.count("@") != 1:
        return f"500 Invalid from address <{address!r}>"
    return None


def check_outgoing(mail_from: str, rcpt_tos: Sequence[str], message: Entity) -> str | None:
    """Error reply for a mail submitted by a user of this relay, or None to accept it.

    There are no passthrough senders or recipients: upstream 1.11 dropped them (one source of
    unencrypted mail less), and so does this relay (chatmaild.config warns about the keys)."""
    from_addr = encryption.from_address(message) or ""
    if mail_from.lower() != from_addr.lower():
        return f"500 Invalid FROM <{from_addr!r}> for <{mail_from!r}>"
    if encryption.is_encrypted(message, allow_armor_headers=False):
        return None
    if encryption.is_securejoin_request(message):
        return None
    if list(rcpt_tos) == [from_addr] and encryption.is_autocrypt_setup_message(message):
        return None
    return ENCRYPTION_NEEDED_523


def check_incoming(
    rcpt_tos: Sequence[str], message: Entity, accepts_cleartext: Callable[[str], bool]
) -> str | None:
    """Error reply for a mail from another server, or None to accept it.

    ``accepts_cleartext(recipient)`` tells whether that recipient takes unencrypted mail.
    """
    if encryption.is_encrypted(message, allow_armor_headers=True):
        return None
    if encryption.is_securejoin_request(message):
        return None
    # bounces must reach the sender; Delta Chat shows them as delivery errors, not as messages
    if encryption.is_mailer_daemon_report(message):
        return None
    if all(accepts_cleartext(r) for r in rcpt_tos):
        return None
    return ENCRYPTION_NEEDED_523


def mailbox_accepts_cleartext(config: Config, recipient: str) -> bool:
    """False while the recipient's account has its ``enforceE2EEincoming`` file.

    The address is looked up the way Postfix/Dovecot deliver it: case-insensitively and without a
    ``+detail`` extension, so neither can be used to slip cleartext past the check. An address
    that cannot be an account here has no mailbox to protect.
    """
    localpart, _, domain = recipient.lower().rpartition("@")
    addr = f"{localpart.partition('+')[0]}@{domain}"
    try:
        mailbox = get_mailbox(config, addr)
    except InvalidAddress:
        return True
    return mailbox.is_incoming_cleartext_ok()


# --- re-injection: a small SMTP client with a pool of open connections to Postfix


class ReinjectError(Exception):
    """Re-injection failed; ``reply`` is what our own client should be told."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class _StaleConnection(Exception):
    """A pooled connection turned out to be closed before any of the mail was sent."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    extensions: frozenset[str]  # EHLO keywords of the server
    idle_since: float = field(default_factory=time.monotonic)

    async def read_reply(self) -> tuple[int, str]:
        """(code, text); the text of a multi-line reply has one line per reply line."""
        lines = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError("connection closed by Postfix")
            lines.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                break
        try:
            code = int(lines[0][:3])
        except ValueError:
            raise ConnectionError(f"bad SMTP reply {lines[0]!r}") from None
        return code, "\n".join(line[4:] for line in lines)

    async def commands(self, commands: Sequence[bytes]) -> list[tuple[int, str]]:
        """Send commands (pipelined if the server allows it) and return their replies."""
        replies = []
        if "PIPELINING" in self.extensions:
            self.writer.write(b"".join(commands))
            await self.writer.drain()
            for _ in commands:
                replies.append(await self.read_reply())
        else:
            for command in commands:
                self.writer.write(command)
                await self.writer.drain()
                replies.append(await self.read_reply())
        return replies

    def close(self) -> None:
        self.writer.close()


async def write_data(writer: asyncio.StreamWriter, content: bytes | bytearray) -> None:
    """``content`` as DATA payload with the closing ".", in blocks: the transport copies only what
    the socket does not take at once, so a large mail is not held a second time."""
    if b"\n." in content or content.startswith(b"."):
        content = dot_stuffed(content)  # rare: OpenPGP armor never needs it
    view = memoryview(content)
    for start in range(0, len(view), WRITE_BLOCK_SIZE):
        writer.write(view[start : start + WRITE_BLOCK_SIZE])
        await writer.drain()
    writer.write(b".\r\n" if content.endswith(b"\r\n") else b"\r\n.\r\n")
    await writer.drain()


def dot_stuffed(content: bytes | bytearray) -> bytes | bytearray:
    """``content`` as DATA payload (RFC 5321 section 4.5.2), ending in CRLF."""
    stuffed = content.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


class Reinjector:
    """Hands accepted mail to Postfix on ``127.0.0.1:port``, binding to ``source_host`` (upstream
    re-injects incoming mail from 127.0.0.2 so that the DKIM milter verifies instead of signs)."""

    def __init__(self, port: int, source_host: str = "127.0.0.1", pool_size: int = REINJECT_POOL_SIZE) -> None:
        self.port = port
        self.source_host = source_host
        self.pool_size = pool_size
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.source_host, 0)),
            REINJECT_CONNECT_TIMEOUT,
        )
        conn = _Connection(reader, writer, extensions=frozenset())
        try:
            code, text = await conn.read_reply()
            if code != 220:
                raise ReinjectError(_temporary(code, text))
            (code, text), = await conn.commands([f"EHLO [{self.source_host}]\r\n".encode()])
            if code != 250:
                raise ReinjectError(_temporary(code, text))
        except BaseException:
            conn.close()
            raise
        conn.extensions = frozenset(line.split()[0].upper() for line in text.split("\n")[1:] if line.split())
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reader.at_eof() or now - conn.idle_since > REINJECT_MAX_IDLE:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _Connection) -> None:
        if len(self._idle) < self.pool_size:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def send(self, mail_from: str, rcpt_tos: Sequence[str], content: bytes | bytearray, mail_params: Sequence[str]) -> None:
        """Deliver one mail; raises ReinjectError with the reply for our client on failure.

        ``mail_params``: MAIL parameters of our client to pass on (see FORWARDED_MAIL_PARAMS).
        """
        try:
            async with asyncio.timeout(REINJECT_TRANSACTION_TIMEOUT):
                conn = self._take_idle()
                if conn is not None:
                    try:
                        await self._transaction(conn, mail_from, rcpt_tos, content, mail_params, reused=True)
                        return
                    except _StaleConnection:
                        pass
                conn = await self._connect()
                await self._transaction(conn, mail_from, rcpt_tos, content, mail_params, reused=False)
        except ReinjectError:
            raise
        except (OSError, EOFError, TimeoutError) as e:
            raise ReinjectError(f"451 4.4.2 Re-injection to Postfix failed: {e or type(e).__name__}") from e

    async def _transaction(
        self, conn: _Connection, mail_from: str, rcpt_tos: Sequence[str], content: bytes | bytearray,
        mail_params: Sequence[str], reused: bool,
    ) -> None:
        params = "".join(f" {p}" for p in mail_params if FORWARDED_MAIL_PARAMS.get(p) in conn.extensions)
        reverse_path = "" if mail_from == "<>" else mail_from  # aiosmtpd gives the null sender as "<>"
        envelope_commands = [f"MAIL FROM:<{reverse_path}>{params}\r\n".encode()]
        envelope_commands += [f"RCPT TO:<{rcpt}>\r\n".encode() for rcpt in rcpt_tos]
        envelope_commands.append(b"DATA\r\n")
        try:
            try:
                replies = await conn.commands(envelope_commands)
            except (OSError, EOFError) as e:
                # nothing of the mail has been accepted yet: a reused connection may just be stale
                if reused:
                    raise _StaleConnection() from e
                raise
            if reused and replies[0][0] == 421:
                raise _StaleConnection()  # Postfix said goodbye (e.g. idle timeout) before our MAIL
            *envelope_replies, (data_code, data_text) = replies
            refused = [(code, text) for code, text in envelope_replies if code >= 400]
            if refused:
                # with 354 the server waits for content; hanging up discards the transaction
                raise ReinjectError(_reply(*refused[0]))
            if data_code != 354:
                raise ReinjectError(_reply(data_code, data_text))
            await write_data(conn.writer, content)
            code, text = await conn.read_reply()
            if code != 250:
                raise ReinjectError(_reply(code, text))
        except BaseException:
            conn.close()
            raise
        self._release(conn)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _reply(code: int, text: str) -> str:
    """A (possibly multi-line) reply of Postfix as one reply line for our client."""
    return f"{code} {' '.join(text.splitlines())}"


def _temporary(code: int, text: str) -> str:
    return "451 4.4.2 Re-injection to Postfix failed: " + _reply(code, text)


# --- the SMTP side


class FilterSMTP(SMTP):
    """aiosmtpd's server with two changes for a before-queue filter.

    - MAIL/RCPT parameters it does not implement are ignored: Postfix passes on what its clients
      sent (e.g. ``NOTIFY=``/``ORCPT=`` from other servers), where aiosmtpd would answer 555.
      SIZE, BODY and SMTPUTF8 keep aiosmtpd's handling (SIZE over the limit: 552 at MAIL).
    - DATA is read in blocks of up to ``line_length_limit`` bytes instead of line by line (which
      costs about 25 ms per MB); lines longer than 1000 bytes are passed on, not refused.
    """

    _KNOWN_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8"})
    # aiosmtpd sizes its stream reader with this; we search DATA for its end in blocks this large.
    # Command lines stay limited by command_size_limit.
    line_length_limit = 1 << 16

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        parsed = super()._getparams(params)
        if parsed is None:
            return None
        return {key: value for key, value in parsed.items() if key in self._KNOWN_PARAMS}

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await self._read_data()
        except asyncio.IncompleteReadError:
            return  # the client hung up; the connection is being closed
        if content is None:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytearray | None:
        """The mail up to the line holding a lone ".", dot-unstuffed (RFC 5321 section 4.5.2);
        None if it was larger than data_size_limit (then it is read and discarded)."""
        limit = self.data_size_limit
        # one growing buffer, handed on as it is: a 10 MB mail is held once, not as pieces plus
        # their join plus the unstuffed copy (filtermail's peak RSS with 10 MB mail: 50 -> 36 MB)
        content = bytearray()
        size = 0
        tail = b"\r\n"  # the last two bytes before the next block; DATA's own line end at first
        while True:
            try:
                block = await self._reader.readuntil(b".\r\n")
                dot = len(block) - 3
                before_dot = block[dot - 2 : dot] if dot >= 2 else (tail + block[:dot])[-2:]
                is_end = before_dot == b"\r\n"
            except asyncio.LimitOverrunError as e:
                block = await self._reader.readexactly(e.consumed)
                is_end = False
            piece = block[:dot] if is_end else block
            size += len(piece)
            if limit and size > limit:
                content.clear()
            else:
                content += piece
            if is_end:
                break
            tail = (tail + piece)[-2:] if len(piece) < 2 else piece[-2:]
        if limit and size > limit:
            return None
        if b"\r\n." in content:  # never in OpenPGP armor: base64 has no "."
            content = content.replace(b"\r\n.", b"\r\n")
        if content.startswith(b"."):
            del content[0]
        return content


class FilterHandler:
    """aiosmtpd handler: checks each mail with ``check`` and re-injects what passes."""

    def __init__(
        self,
        check: Callable[[str, Sequence[str], Entity], str | None],
        reinjector: Reinjector,
        rate_limiter: SendRateLimiter | None = None,
        direction: str = "Outgoing",
    ) -> None:
        self.check = check
        self.reinjector = reinjector
        self.rate_limiter = rate_limiter
        self.direction = direction

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.rate_limiter is not None:
            error = check_sender_address(address)
            if error:
                return error
            if not self.rate_limiter.allow(address.lower()):
                log.info("rate limit: refusing mail from %s", address)
                return f"450 4.7.1: Too much mail from {address}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = parse_mail(content)
        if isinstance(message, str):
            return message
        mail_from = envelope.mail_from or ""
        try:
            error = self.check(mail_from, envelope.rcpt_tos, message)
            if error:
                log.info("refused: %s", error)
                return error
            params = [p for p in envelope.mail_options if p in FORWARDED_MAIL_PARAMS]
            await self.reinjector.send(mail_from, envelope.rcpt_tos, content, params)
            log_filtered(self.direction, message)
        except ReinjectError as e:
            log.warning("re-injection failed: %s", e.reply)
            return e.reply
        except Exception:
            # a bug must not bounce the mail: Postfix keeps it and its client retries
            log.exception("handling a mail failed")
            return INTERNAL_ERROR
        return "250 OK"


def make_handler(config: Config, mode: str) -> tuple[FilterHandler, int]:
    """The handler for ``mode`` and the port to listen on."""
    if mode == "outgoing":
        limiter = SendRateLimiter(config.max_user_send_per_minute, config.max_user_send_burst_size)
        handler = FilterHandler(
            check_outgoing,
            Reinjector(config.postfix_reinject_port),
            limiter,
        )
        return handler, config.filtermail_smtp_port
    if mode == "incoming":
        handler = FilterHandler(
            lambda mail_from, rcpt_tos, message: check_incoming(
                rcpt_tos, message, lambda rcpt: mailbox_accepts_cleartext(config, rcpt)
            ),
            Reinjector(config.postfix_reinject_port_incoming, source_host="127.0.0.2"),
            direction="Incoming",
        )
        return handler, config.filtermail_smtp_port_incoming
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


async def serve(config: Config, mode: str) -> None:
    """Serve SMTP until SIGTERM/SIGINT."""
    handler, port = make_handler(config, mode)
    loop = asyncio.get_running_loop()

    def make_protocol() -> SMTP:
        # hostname given: aiosmtpd would otherwise resolve our FQDN on every connection
        return FilterSMTP(
            handler,
            hostname="localhost",
            ident="filtermail",
            data_size_limit=config.max_message_size,
            # Postfix passes on SMTPUTF8 when its client (e.g. Delta Chat) sends it
            enable_SMTPUTF8=True,
            loop=loop,
        )

    server = await loop.create_server(make_protocol, "127.0.0.1", port)
    log.info("filtermail %s on 127.0.0.1:%d: entering serving loop", mode, port)
    try:
        await stopped()
    finally:
        server.close()
        await server.wait_closed()
        handler.reinjector.close()


async def stopped() -> None:
    """Returns on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


# --- the milter side: Postfix's smtpd hands each SMTP session to filtermail (smtpd_milters), so
# every mail passes Postfix once; nothing is re-injected.


def parse_mail(content: bytes | bytearray) -> Entity | str:
    """The parsed mail, or the reply refusing a mail that cannot be looked at."""
    try:
        return encryption.parse_entity(content)
    except MalformedMessage as e:
        return f"552 5.3.4 Message not accepted: {e}"


def resets_sender(mail_from: str, from_addr: str) -> bool:
    """Incoming mail whose envelope sender is not its From address keeps the mail but loses the
    envelope sender (upstream 1.10+): a bounce would go to someone who did not write it."""
    return mail_from != "" and mail_from.lower() != from_addr.lower()


class OutgoingMilter(MilterSession):
    """Submission (ports 587/465): sender address and rate limit at MAIL, the encryption rule at
    the end of the message. Postfix has checked that the sender is the login (553)."""

    def __init__(self, limiter: SendRateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def on_mail(self, message: Message) -> str | None:
        address = message.mail_from
        error = check_sender_address(address)
        if error:
            return error
        # counted against the login, so that nobody can use up someone else's budget with a MAIL
        # FROM that Postfix refuses later (553 at RCPT)
        login = message.macros.get(b"{auth_authen}", b"").decode("utf-8", "replace") or address
        if not self.limiter.allow(login.lower()):
            log.info("rate limit: refusing mail from %s", address)
            return f"450 4.7.1: Too much mail from {address}"
        return None

    def on_message(self, message: Message) -> Verdict:
        parsed = parse_mail(message.data)
        if isinstance(parsed, str):
            return parsed, []
        error = check_outgoing(message.mail_from, message.rcpt_tos, parsed)
        if error:
            log.info("refused: %s", error)
        else:
            log_filtered("Outgoing", parsed)
        return error, []


class IncomingMilter(MilterSession):
    """Port 25: the encryption rule, then the origin: a valid DKIM signature of the From domain
    (``keys`` None: not checked; nothing to check for a From at a domain literal)."""

    ACTIONS = SMFIF_CHGFROM

    def __init__(self, config: Config, keys: KeyResolver | None) -> None:
        super().__init__()
        self.config = config
        self.keys = keys

    def on_message(self, message: Message) -> Verdict | Awaitable[Verdict]:
        parsed = parse_mail(message.data)
        if isinstance(parsed, str):
            return parsed, []
        from_addr = encryption.from_address(parsed) or ""
        localpart, at, domain = from_addr.rpartition("@")
        if not (localpart and at and domain):
            return f"500 Invalid FROM header: {(parsed.header('from') or '').strip()}", []
        error = check_incoming(message.rcpt_tos, parsed,
                               lambda rcpt: mailbox_accepts_cleartext(self.config, rcpt))
        if error:
            log.info("refused: %s", error)
            return error, []
        log_filtered("Incoming", parsed)
        edits = [change_sender("")] if resets_sender(message.mail_from, from_addr) else []
        # A relay without a domain name (From at a domain literal, `user@[192.0.2.1]`) has no DNS
        # for a DKIM key, and since upstream's filtermail 0.6 its address is not compared with
        # the client's either: such a relay may send over IPv6 for an IPv4 literal, or arrive
        # over /mxdeliv from loopback.
        if self.keys is None or (domain.startswith("[") and domain.endswith("]")):
            return None, edits
        return self._verified(message, domain, edits)

    async def _verified(self, message: Message, domain: str, edits: list[bytes]) -> Verdict:
        assert self.keys is not None and message.body_start is not None
        error = await check_dkim(message.headers, bytes(message.data[message.body_start :]), domain, self.keys)
        if error:
            log.info("refused mail from %s: %s", domain, error)
            return error, []
        return None, edits


async def serve_milter(config: Config, mode: str, socket_path: Path, verify_dkim: bool = True) -> None:
    """Serve the milter protocol on a unix socket until SIGTERM/SIGINT."""
    if mode == "outgoing":
        limiter = SendRateLimiter(config.max_user_send_per_minute, config.max_user_send_burst_size)
        factory: Callable[[], MilterSession] = lambda: OutgoingMilter(limiter)
    else:
        keys = KeyResolver() if verify_dkim else None
        factory = lambda: IncomingMilter(config, keys)
    loop = asyncio.get_running_loop()
    socket_path.unlink(missing_ok=True)
    server = await loop.create_unix_server(factory, str(socket_path))
    # who may connect is decided by the directory (the daemon's user and Postfix's group)
    socket_path.chmod(0o666)
    log.info("filtermail %s milter on %s%s: entering serving loop", mode, socket_path,
             "" if verify_dkim or mode == "outgoing" else " (DKIM NOT verified)")
    try:
        await stopped()
    finally:
        server.close()
        socket_path.unlink(missing_ok=True)


USAGE = """usage: filtermail INI_PATH outgoing|incoming
       filtermail INI_PATH outgoing-milter|incoming-milter SOCKET_PATH [--skip-dkim]"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    skip_dkim = len(args) == 4 and args[1] == "incoming-milter" and args[3] == "--skip-dkim"
    smtp_mode = len(args) == 2 and args[1] in MODES
    milter_mode = (len(args) == 3 or skip_dkim) and args[1] in MILTER_MODES
    if not (smtp_mode or milter_mode):
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        config = read_config(args[0])
    except ConfigError as e:
        print(f"filtermail: {e}", file=sys.stderr)
        return 1
    if smtp_mode:
        asyncio.run(serve(config, args[1]))
    else:
        asyncio.run(serve_milter(config, MILTER_MODES[args[1]], Path(args[2]), verify_dkim=not skip_dkim))
    return 0


if __name__ == "__main__":
    sys.exit(main())
