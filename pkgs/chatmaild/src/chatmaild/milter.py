"""The Sendmail milter protocol (version 6, as Postfix speaks it), server side, on asyncio.

Postfix opens one connection per SMTP session (``smtpd_milters = unix:PATH``) and sends every
event as a packet: a 4-byte big-endian length, a command byte, the data. A :class:`MilterSession`
subclass gets the events it negotiated and answers those Postfix waits for; everything that does
not need a reply is negotiated away (``SMFIP_NR_*``), so a message costs one round trip at MAIL
and one at the end of the message.

Facts from Sendmail's libmilter (mfdef.h) and Postfix's milter8.c; the protocol is small enough
that a library (pymilter: libmilter plus a thread per connection) is not needed, see
docs/benchmarks.md for the comparison.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import Awaitable
from dataclasses import dataclass, field

log = logging.getLogger("milter")

VERSION = 6

# commands from the MTA
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# replies
SMFIR_CHGFROM = b"e"
SMFIR_CHGHEADER = b"m"
SMFIR_CONTINUE = b"c"
SMFIR_REPLYCODE = b"y"
SMFIR_TEMPFAIL = b"t"

# actions the filter may take (SMFIF_*)
SMFIF_CHGHDRS = 0x10
SMFIF_CHGFROM = 0x40

# protocol steps the filter does not want (SMFIP_NO*) or does not answer (SMFIP_NR_*)
SMFIP_NOCONNECT = 0x1
SMFIP_NOHELO = 0x2
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_NR_HDR = 0x80
SMFIP_NR_CONN = 0x1000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000  # header values with their leading space: "Name:" + value is the line

# a bug must not bounce the mail: Postfix keeps it and its client retries
INTERNAL_ERROR = "451 4.3.0 Error: internal error in filtermail"

# A packet is at most this large (Postfix sends body chunks of up to 64 KB).
MAX_PACKET = 1 << 20


class ProtocolError(Exception):
    """The MTA sent something this side cannot make sense of; the connection is closed."""


def packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def reply_code(reply: str) -> bytes:
    """SMFIR_REPLYCODE for a complete SMTP reply such as ``"554 5.7.1 No DKIM signature found"``;
    ``%`` is doubled because Postfix expands it like printf."""
    return packet(SMFIR_REPLYCODE, reply.replace("%", "%%").encode("utf-8", "replace") + b"\0")


def strings(data: bytes) -> list[bytes]:
    """NUL-terminated strings of a packet's data."""
    return data.split(b"\0")[:-1] if data.endswith(b"\0") else data.split(b"\0")


def unbracket(address: bytes) -> str:
    """``<a@b>`` -> ``a@b`` (the null sender ``<>`` -> ``""``)."""
    text = address.decode("utf-8", "surrogateescape").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


@dataclass
class Message:
    """What one transaction of the SMTP session brought so far. ``data`` is the message as it
    would be sent over SMTP (CRLF line ends): the header lines as they come, then the empty line
    and the body, in one buffer (a large body is held once)."""

    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)
    macros: dict[bytes, bytes] = field(default_factory=dict)  # of the MAIL stage, e.g. {auth_authen}
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # (name, value with CRLFs)
    data: bytearray = field(default_factory=bytearray)
    body_start: int | None = None

    def end_headers(self) -> None:
        if self.body_start is None:
            self.data += b"\r\n"
            self.body_start = len(self.data)


# (reply refusing the message, or None to accept it; modification packets sent before accepting)
Verdict = tuple[str | None, list[bytes]]


class MilterSession(asyncio.Protocol):
    """One milter connection. Subclasses set ACTIONS and override the hooks: ``on_mail`` answers
    MAIL (a reply string refuses it), ``on_message`` the end of the message with a Verdict or an
    awaitable of one (for answers that need I/O). Header and body packets are collected into
    ``self.message``; nothing else is answered."""

    ACTIONS = 0
    # NOHELO/NOUNKNOWN/NODATA: not needed; NR_*: no reply expected for connect, RCPT, headers,
    # end of headers, body chunks (Postfix does not wait for them)
    PROTOCOL = (SMFIP_NOHELO | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_NR_CONN | SMFIP_NR_RCPT
                | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_HDR_LEADSPC)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.client_address = ""
        self.message = Message()
        self.macros: dict[bytes, bytes] = {}  # the last macros Postfix sent (stage MAIL)
        self.pending: asyncio.Task | None = None  # the end-of-message answer being worked out

    # --- hooks

    def on_mail(self, message: Message) -> str | None:
        return None

    def on_message(self, message: Message) -> Verdict | Awaitable[Verdict]:
        return None, []

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is None:
            self._process()

    def _process(self) -> None:
        buffer = self.buffer
        start = 0
        try:
            while self.pending is None and len(buffer) - start >= 4:
                (length,) = struct.unpack_from("!I", buffer, start)
                if not 1 <= length <= MAX_PACKET:
                    raise ProtocolError(f"bad packet length {length}")
                end = start + 4 + length
                if len(buffer) < end:
                    break
                command = bytes(buffer[start + 4 : start + 5])
                data = bytes(buffer[start + 5 : end])
                start = end
                self._dispatch(command, data)
        except ProtocolError as e:
            log.warning("closing the milter connection: %s", e)
            self._close()
        except Exception:
            log.exception("milter: unexpected error; closing the connection (Postfix tempfails)")
            self._close()
        finally:
            del buffer[:start]

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _dispatch(self, command: bytes, data: bytes) -> None:
        message = self.message
        if command == SMFIC_HEADER:
            name, value = (strings(data) + [b"", b""])[:2]
            # Postfix sends folded values with bare LF line breaks
            value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
            message.headers.append((name, value))
            message.data += name + b":" + value
        elif command == SMFIC_BODY:
            message.end_headers()
            message.data += data
        elif command == SMFIC_EOH:
            message.end_headers()
        elif command == SMFIC_MACRO:
            if data[:1] == SMFIC_MAIL:
                fields = strings(data[1:])
                self.macros = dict(zip(fields[::2], fields[1::2]))
        elif command == SMFIC_RCPT:
            message.rcpt_tos.append(unbracket(strings(data)[0]))
        elif command == SMFIC_MAIL:
            self.message = Message(mail_from=unbracket(strings(data)[0]), macros=self.macros)
            reply = self.on_mail(self.message)
            self._write(reply_code(reply) if reply else packet(SMFIR_CONTINUE))
        elif command == SMFIC_BODYEOB:
            message.end_headers()
            message.data += data
            self._end_of_message()
        elif command == SMFIC_CONNECT:
            self._connect(data)
        elif command == SMFIC_OPTNEG:
            self._negotiate(data)
        elif command == SMFIC_ABORT:
            self.message = Message()
        elif command == SMFIC_QUIT_NC:
            self.message = Message()
            self.client_address = ""
        elif command == SMFIC_QUIT:
            self._close()
        else:
            raise ProtocolError(f"unexpected command {command!r}")

    def _negotiate(self, data: bytes) -> None:
        if len(data) < 12:
            raise ProtocolError("short option negotiation")
        version, actions, protocol = struct.unpack_from("!III", data)
        if version < VERSION:
            raise ProtocolError(f"MTA speaks milter protocol {version}, need {VERSION}")
        missing = self.PROTOCOL & ~protocol
        if missing or self.ACTIONS & ~actions:
            raise ProtocolError(f"MTA does not offer protocol steps {missing:#x} / actions "
                                f"{self.ACTIONS & ~actions:#x}")
        self._write(packet(SMFIC_OPTNEG, struct.pack("!III", VERSION, self.ACTIONS, self.PROTOCOL)))

    def _connect(self, data: bytes) -> None:
        # hostname NUL, family byte, port (2 bytes), address NUL
        _, sep, rest = data.partition(b"\0")
        if sep and len(rest) >= 3 and rest[:1] in (b"4", b"6"):
            self.client_address = rest[3:].split(b"\0", 1)[0].decode("ascii", "replace")

    def _end_of_message(self) -> None:
        message, self.message = self.message, Message()
        try:
            answer = self.on_message(message)
        except Exception:
            log.exception("milter: checking a message failed; answering tempfail")
            self._write(reply_code(INTERNAL_ERROR))
            return
        if isinstance(answer, tuple):
            self._answer(*answer)
            return
        self.pending = asyncio.ensure_future(answer)
        self.pending.add_done_callback(self._pending_done)

    def _pending_done(self, task: asyncio.Task) -> None:
        self.pending = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("milter: checking a message failed: %r; answering tempfail", error)
            self._write(reply_code(INTERNAL_ERROR))
        else:
            self._answer(*task.result())
        if self.buffer:
            self._process()

    def _answer(self, reply: str | None, edits: list[bytes]) -> None:
        if reply:
            self._write(reply_code(reply))
        else:
            self._write(b"".join(edits) + packet(SMFIR_CONTINUE))


def change_sender(address: str) -> bytes:
    """SMFIR_CHGFROM: the envelope sender becomes ``address`` ("" = the null sender)."""
    return packet(SMFIR_CHGFROM, f"<{address}>".encode("utf-8", "surrogateescape") + b"\0")


# --- the MTA side, as Postfix speaks it: for tests and the benchmark

SMFIP_ALL = 0x1FFFFF  # every protocol step and no-reply option Postfix offers
SMFIF_ALL = 0x1FF
FINAL_REPLIES = frozenset(b"acdrty")  # accept, continue, discard, reject, tempfail, reply code


@dataclass
class Answer:
    """The milter's answer to a MAIL or to the end of a message."""

    command: bytes  # one of FINAL_REPLIES
    text: str = ""  # the SMTP reply of SMFIR_REPLYCODE
    edits: list[tuple[bytes, bytes]] = field(default_factory=list)  # (command, data) before it

    @property
    def accepted(self) -> bool:
        return self.command in (SMFIR_CONTINUE, b"a")


class MilterClient:
    """A blocking milter connection that plays Postfix's part (one SMTP session)."""

    def __init__(self, path: str, timeout: float = 10.0, client_address: str = "192.0.2.1") -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        self.send(SMFIC_OPTNEG, struct.pack("!III", VERSION, SMFIF_ALL, SMFIP_ALL))
        command, data = self.receive()
        if command != SMFIC_OPTNEG:
            raise ProtocolError(f"no option negotiation but {command!r}")
        _, self.actions, self.protocol = struct.unpack_from("!III", data)
        if not self.protocol & SMFIP_NOCONNECT:
            self.send(SMFIC_CONNECT, b"client.test\0" + b"4" + struct.pack("!H", 4711)
                      + client_address.encode() + b"\0")
            if not self.protocol & SMFIP_NR_CONN:
                self.receive_answer()

    def send(self, command: bytes, data: bytes = b"") -> None:
        self.sock.sendall(packet(command, data))

    def receive(self) -> tuple[bytes, bytes]:
        head = self.reader.read(4)
        if len(head) < 4:
            raise ConnectionError("milter closed the connection")
        (length,) = struct.unpack("!I", head)
        body = self.reader.read(length)
        if len(body) < length:
            raise ConnectionError("milter closed the connection")
        return body[:1], body[1:]

    def receive_answer(self) -> Answer:
        edits = []
        while True:
            command, data = self.receive()
            if command[0] in FINAL_REPLIES:
                return Answer(command, data.rstrip(b"\0").decode() if command == SMFIR_REPLYCODE else "", edits)
            edits.append((command, data))

    def step(self, command: bytes, data: bytes, no_reply: int) -> Answer | None:
        self.send(command, data)
        return None if self.protocol & no_reply else self.receive_answer()

    def transaction(self, mail_from: str, rcpt_tos: list[str], message: bytes, login: str | None = None) -> Answer:
        """One mail: the answer at MAIL if it refuses, else the answer at the end of the message."""
        if login is not None:
            self.send(SMFIC_MACRO, SMFIC_MAIL + b"{auth_authen}\0" + login.encode() + b"\0")
        answer = self.step(SMFIC_MAIL, f"<{mail_from}>".encode() + b"\0", 0x4000)  # SMFIP_NR_MAIL
        if answer is not None and not answer.accepted:
            return answer
        for rcpt in rcpt_tos:
            self.step(SMFIC_RCPT, f"<{rcpt}>".encode() + b"\0", SMFIP_NR_RCPT)
        head, _, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
        for field_text in re.split(rb"\n(?![ \t])", head):
            name, _, value = field_text.partition(b":")
            self.step(SMFIC_HEADER, name + b"\0" + value + b"\0", SMFIP_NR_HDR)
        self.step(SMFIC_EOH, b"", SMFIP_NR_EOH)
        body = body.replace(b"\n", b"\r\n")
        for start in range(0, len(body), 65535):
            self.step(SMFIC_BODY, body[start : start + 65535], SMFIP_NR_BODY)
        self.send(SMFIC_BODYEOB)
        return self.receive_answer()

    def abort(self) -> None:
        self.send(SMFIC_ABORT)

    def close(self) -> None:
        try:
            self.send(SMFIC_QUIT)
        except OSError:
            pass
        self.reader.close()
        self.sock.close()
