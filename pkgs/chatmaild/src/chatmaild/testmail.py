"""Builders of test mails, for this package's tests and the harness/VM scenario scripts.

Every builder returns an :class:`email.message.EmailMessage`; :func:`to_bytes` gives the CRLF wire
form that an SMTP client sends (``smtplib.SMTP.send_message`` works too). Nothing here encrypts
anything: :func:`make_encrypted_message` only has the *structure* of OpenPGP/MIME, which is all a
relay can check.

- :func:`make_encrypted_message` — valid OpenPGP/MIME (PKESK + SEIPD of random bytes, armored with
  a correct CRC24); ``armored=`` swaps in any armor text (e.g. a corrupted one).
- :func:`make_plain_message` — a cleartext ``text/plain`` mail.
- :func:`make_securejoin_request` — the cleartext first step of a Delta Chat Secure-Join.
- :func:`make_autocrypt_setup_message` — an Autocrypt Setup Message (send it to yourself).
- :func:`make_mailer_daemon_report` / :func:`make_mdn` — a delivery status report / a read receipt.
- :func:`openpgp_packet`, :func:`make_openpgp_payload`, :func:`armor`, :func:`crc24` — the pieces,
  for tests that corrupt them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid

CRLF = "\r\n"
_PARSER = BytesParser(policy=policy.default)


def _crc24_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24_TABLE = _crc24_table()


def crc24(data: bytes) -> int:
    """The OpenPGP armor checksum (RFC 9580 section 6.1), CRC-24 with generator 0x864CFB."""
    crc = 0xB704CE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24_TABLE[(crc >> 16) ^ byte]
    return crc


def openpgp_packet(
    tag: int, body: bytes, *, legacy: bool = False, partial_chunk: int | None = None
) -> bytes:
    """One OpenPGP packet. ``legacy``: old-format header (tags < 16); ``partial_chunk``: split
    the body into partial body length chunks of that size (a power of two, >= 512)."""
    if legacy:
        if tag > 15:
            raise ValueError("legacy packet format only has tags 0..15")
        for length_type, size in enumerate((1, 2, 4)):
            if len(body) < 1 << (8 * size):
                return bytes([0x80 | tag << 2 | length_type]) + len(body).to_bytes(size, "big") + body
        raise ValueError("body too long")
    header = bytes([0xC0 | tag])
    if partial_chunk is None:
        return header + _new_format_length(len(body)) + body
    exponent = partial_chunk.bit_length() - 1
    if partial_chunk != 1 << exponent or not 9 <= exponent <= 30:
        raise ValueError("partial_chunk must be a power of two between 512 and 2**30")
    chunks = []
    pos = 0
    while len(body) - pos > partial_chunk:
        chunks.append(bytes([0xE0 | exponent]) + body[pos : pos + partial_chunk])
        pos += partial_chunk
    chunks.append(_new_format_length(len(body) - pos) + body[pos:])
    return header + b"".join(chunks)


def _new_format_length(length: int) -> bytes:
    if length < 192:
        return bytes([length])
    if length < 8384:
        length -= 192
        return bytes([192 + (length >> 8), length & 0xFF])
    return b"\xff" + length.to_bytes(4, "big")


def make_openpgp_payload(size: int = 600, *, recipients: int = 1, partial_chunk: int | None = None) -> bytes:
    """PKESK packet(s) (v3, X25519-sized, random content) and one SEIPD v1 packet of ``size``
    random bytes: what an encrypted Delta Chat message looks like from the outside."""
    pkesks = b"".join(
        openpgp_packet(1, b"\x03" + os.urandom(8) + b"\x12" + os.urandom(73)) for _ in range(recipients)
    )
    return pkesks + openpgp_packet(18, b"\x01" + os.urandom(size), partial_chunk=partial_chunk)


def armor(
    data: bytes,
    *,
    checksum: bool = True,
    headers: Sequence[tuple[str, str]] = (),
    line_length: int = 76,
    linesep: str = CRLF,
) -> str:
    """ASCII armor of a PGP MESSAGE (with a blank line after the optional armor headers)."""
    encoded = base64.b64encode(data).decode("ascii")
    lines = ["-----BEGIN PGP MESSAGE-----"]
    lines += [f"{key}: {value}" for key, value in headers]
    lines.append("")
    lines += [encoded[i : i + line_length] for i in range(0, len(encoded), line_length)]
    if checksum:
        lines.append("=" + base64.b64encode(crc24(data).to_bytes(3, "big")).decode("ascii"))
    lines.append("-----END PGP MESSAGE-----")
    return linesep.join(lines) + linesep


def _addresses(to_addrs: str | Iterable[str]) -> str:
    return to_addrs if isinstance(to_addrs, str) else ", ".join(to_addrs)


def _headers(from_addr: str, to_addrs: str | Iterable[str], subject: str, extra: Sequence[str]) -> list[str]:
    domain = from_addr.rpartition("@")[2] or "localhost"
    return [
        f"From: <{from_addr}>",
        f"To: {_addresses(to_addrs)}",
        f"Subject: {subject}",
        f"Date: {formatdate()}",
        f"Message-ID: {make_msgid(domain=domain)}",
        "MIME-Version: 1.0",
        *extra,
    ]


def _build(header_lines: Sequence[str], body: str) -> EmailMessage:
    raw = CRLF.join(header_lines) + CRLF + CRLF + body
    message = _PARSER.parsebytes(raw.encode("utf-8"))
    assert isinstance(message, EmailMessage)
    return message


def _multipart(boundary: str, parts: Sequence[str]) -> str:
    body = "".join(f"--{boundary}{CRLF}{part}{CRLF}" for part in parts)
    return body + f"--{boundary}--{CRLF}"


def make_encrypted_message(
    from_addr: str,
    to_addrs: str | Iterable[str],
    *,
    subject: str = "[...]",
    payload_size: int = 600,
    armored: str | None = None,
    extra_headers: Sequence[str] = (),
) -> EmailMessage:
    """A structurally valid OpenPGP/MIME message as Delta Chat sends it (RFC 3156).

    ``payload_size``: bytes of SEIPD content (the armored part is about 4/3 of it);
    ``armored``: use this text as the second part instead of a fresh random armor.
    """
    if armored is None:
        armored = armor(make_openpgp_payload(payload_size))
    boundary = "=_" + os.urandom(12).hex()
    body = _multipart(
        boundary,
        [
            "Content-Type: application/pgp-encrypted" + CRLF
            + "Content-Description: PGP/MIME version identification" + CRLF + CRLF
            + "Version: 1" + CRLF,
            'Content-Type: application/octet-stream; name="encrypted.asc"' + CRLF
            + "Content-Description: OpenPGP encrypted message" + CRLF
            + 'Content-Disposition: inline; filename="encrypted.asc"' + CRLF + CRLF
            + armored,
        ],
    )
    content_type = f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";{CRLF}\tboundary="{boundary}"'
    return _build(_headers(from_addr, to_addrs, subject, [*extra_headers, content_type]), body)


def make_plain_message(
    from_addr: str,
    to_addrs: str | Iterable[str],
    *,
    text: str = "Hi!",
    subject: str = "Message from a test",
    extra_headers: Sequence[str] = (),
) -> EmailMessage:
    """A cleartext ``text/plain`` mail."""
    content_type = "Content-Type: text/plain; charset=utf-8"
    return _build(_headers(from_addr, to_addrs, subject, [*extra_headers, content_type]), text + CRLF)


def make_securejoin_request(
    from_addr: str, to_addr: str, *, step: str = "vc-request", text: str | None = None
) -> EmailMessage:
    """The cleartext Secure-Join request (``vc-request`` or ``vg-request``) of Delta Chat;
    ``text`` overrides the body text (default ``Secure-Join: <step>``)."""
    boundary = "=_" + os.urandom(12).hex()
    body = _multipart(
        boundary,
        ["Content-Type: text/plain; charset=utf-8" + CRLF + CRLF + (text or f"Secure-Join: {step}") + CRLF],
    )
    extra = [
        f"Secure-Join: {step}",
        "Secure-Join-Invitenumber: " + os.urandom(12).hex(),
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
    ]
    return _build(_headers(from_addr, to_addr, f"Message from {from_addr}", extra), body)


def make_autocrypt_setup_message(addr: str) -> EmailMessage:
    """An Autocrypt Setup Message from ``addr`` to itself (its key is SKESK-encrypted)."""
    boundary = "=_" + os.urandom(12).hex()
    setup_armor = armor(openpgp_packet(3, b"\x04\x07\x03\x02" + os.urandom(10)) + openpgp_packet(18, b"\x01" + os.urandom(300)))
    body = _multipart(
        boundary,
        [
            "Content-Type: text/plain" + CRLF + CRLF + "This message contains your Autocrypt setup." + CRLF,
            "Content-Type: application/autocrypt-setup" + CRLF
            + 'Content-Disposition: attachment; filename="autocrypt-setup-message.html"' + CRLF + CRLF
            + "<html><body><pre>" + CRLF + setup_armor + "</pre></body></html>" + CRLF,
        ],
    )
    extra = ["Autocrypt-Setup-Message: v1", f'Content-Type: multipart/mixed; boundary="{boundary}"']
    return _build(_headers(addr, addr, "Autocrypt Setup Message", extra), body)


def make_mailer_daemon_report(from_addr: str, to_addr: str) -> EmailMessage:
    """A bounce (``multipart/report; report-type=delivery-status``) as a mailer daemon sends it;
    ``from_addr`` should be ``MAILER-DAEMON@<domain>``."""
    boundary = "=_" + os.urandom(12).hex()
    body = _multipart(
        boundary,
        [
            "Content-Type: text/plain; charset=us-ascii" + CRLF + CRLF + "Delivery to a recipient failed." + CRLF,
            "Content-Type: message/delivery-status" + CRLF + CRLF
            + "Reporting-MTA: dns; example.org" + CRLF + CRLF
            + "Final-Recipient: rfc822;nobody@example.org" + CRLF + "Action: failed" + CRLF + "Status: 5.1.1" + CRLF,
        ],
    )
    extra = [
        "Auto-Submitted: auto-replied",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    return _build(_headers(from_addr, to_addr, "Undelivered Mail Returned to Sender", extra), body)


def make_mdn(from_addr: str, to_addr: str) -> EmailMessage:
    """A cleartext read receipt (``multipart/report; report-type=disposition-notification``)."""
    boundary = "=_" + os.urandom(12).hex()
    body = _multipart(
        boundary,
        [
            "Content-Type: text/plain; charset=utf-8" + CRLF + CRLF + "The message was displayed." + CRLF,
            "Content-Type: message/disposition-notification" + CRLF + CRLF
            + "Reporting-UA: test" + CRLF + "Disposition: manual-action/MDN-sent-automatically; displayed" + CRLF,
        ],
    )
    extra = [
        "Auto-Submitted: auto-replied",
        f'Content-Type: multipart/report; report-type=disposition-notification; boundary="{boundary}"',
    ]
    return _build(_headers(from_addr, to_addr, "Message opened", extra), body)


def to_bytes(message: EmailMessage) -> bytes:
    """The CRLF wire form of ``message``, as an SMTP client sends it."""
    return message.as_bytes(policy=policy.SMTP)
