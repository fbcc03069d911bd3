"""Which mails count as end-to-end encrypted, and which cleartext mails are allowed anyway.

Pure functions on the raw bytes of a mail (as received over SMTP). The rules follow upstream
chatmail relay 1.9.0's filtermail:

- an OpenPGP/MIME message (RFC 3156): ``multipart/encrypted; protocol="application/pgp-encrypted"``
  with exactly two parts, ``application/pgp-encrypted`` holding ``Version: 1`` and
  ``application/octet-stream`` holding one ASCII-armored ``PGP MESSAGE`` whose packets are zero or
  more session-key packets (PKESK, tag 1 / SKESK, tag 3) followed by exactly one SEIPD packet
  (tag 18) that ends where the data ends; nothing is decrypted;
- a Secure-Join ``vc-request`` / ``vg-request`` (the only cleartext step of the Delta Chat
  handshake);
- an Autocrypt Setup Message, a mailer-daemon delivery report (callers decide where they apply).

The work is bounded: header blocks are capped, only the top level and its direct parts are looked
at (a nested multipart is simply not a valid shape), and the armor is checked with C-speed bytes
operations, so a 10 MB mail costs a few milliseconds.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email import errors
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value, parseaddr

# Top-level header block: far above any real mail (Delta Chat's are a few KB), small enough that
# parsing it stays cheap (about 25 ms).
MAX_HEADER_BYTES = 256 << 10
MAX_PART_HEADER_BYTES = 64 << 10
# A header field longer than this is treated as absent: the stdlib's address and parameter
# parsers take seconds on crafted values of a few hundred KB, and no valid mail has one.
MAX_FIELD_CHARS = 16 << 10

ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
ARMOR_END = b"-----END PGP MESSAGE-----"

TAG_PKESK = 1
TAG_SKESK = 3
TAG_SEIPD = 18
SESSION_KEY_TAGS = frozenset({TAG_PKESK, TAG_SKESK})

SECUREJOIN_REQUESTS = ("vc-request", "vg-request")

_ARMOR_HEADER_RE = re.compile(rb"[A-Za-z][A-Za-z0-9-]*: ")
_ARMOR_CHECKSUM_RE = re.compile(rb"=[A-Za-z0-9+/]{4}")
_BASE64_LINES_RE = re.compile(rb"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")
_MAX_ARMOR_TRAILER = 4096
_HEADER_PARSER = BytesHeaderParser()
_DOMAIN_LITERAL_ADDRESS_RE = re.compile(r"<?([^\s<>@\"]+@\[[0-9A-Fa-f:.IPv]+\])>?\s*$")
# defects of a header block holding lines that are neither fields nor their continuations
_BROKEN_FIELD_LINES = (errors.MissingHeaderBodySeparatorDefect, errors.FirstHeaderLineIsContinuationDefect)


class MalformedMessage(ValueError):
    """The mail cannot be looked at within the bounds (e.g. its header block is too large)."""


@dataclass(frozen=True)
class Entity:
    """A mail or a MIME part: its header fields and where its undecoded body lies in ``data``.

    Parts refer to the mail's buffer instead of holding copies: a 10 MB mail is never copied
    on its way to the armor check.
    """

    headers: Message
    data: bytes | bytearray  # filtermail reads DATA into a bytearray and hands it on uncopied
    body_start: int
    body_end: int

    @property
    def body(self) -> bytes:
        """A copy of the body (for small parts)."""
        return bytes(self.data[self.body_start : self.body_end])

    @property
    def content_type(self) -> str:
        return self.headers.get_content_type()

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            return None
        text = str(value)
        return text if len(text) <= MAX_FIELD_CHARS else None

    def param(self, name: str) -> str | None:
        """A parameter of the Content-Type field."""
        if self.header("content-type") is None:
            return None
        value = self.headers.get_param(name)
        if value is None or value is True:
            return None
        return collapse_rfc2231_value(value)

    def parts(self, max_parts: int) -> list[Entity] | None:
        """The parts of a multipart entity (see split_multipart); None if it has none or too many."""
        boundary = self.param("boundary")
        if boundary is None:
            return None
        ranges = split_multipart(self.data, boundary, max_parts, self.body_start, self.body_end)
        if ranges is None:
            return None
        try:
            return [parse_entity(self.data, MAX_PART_HEADER_BYTES, start, end) for start, end in ranges]
        except MalformedMessage:
            return None


def parse_entity(
    data: bytes, max_header_bytes: int = MAX_HEADER_BYTES, start: int = 0, end: int | None = None
) -> Entity:
    """Split ``data[start:end]`` into header fields and body; raises MalformedMessage if the header
    block (everything before the first empty line) is longer than ``max_header_bytes``."""
    end = len(data) if end is None else end
    if data.startswith(b"\r\n", start, end):
        return Entity(_HEADER_PARSER.parsebytes(b""), data, start + 2, end)
    if data.startswith(b"\n", start, end):
        return Entity(_HEADER_PARSER.parsebytes(b""), data, start + 1, end)
    search_end = min(end, start + max_header_bytes + 3)
    ends = [i for i in (data.find(b"\n\r\n", start, search_end), data.find(b"\n\n", start, search_end)) if i >= 0]
    if ends:
        head_end = min(ends) + 1
        body_start = head_end + (2 if data.startswith(b"\r\n", head_end, end) else 1)
    elif end - start <= max_header_bytes:
        head_end = body_start = end
    else:
        raise MalformedMessage(f"header block longer than {max_header_bytes} bytes")
    if head_end - start > max_header_bytes:
        raise MalformedMessage(f"header block longer than {max_header_bytes} bytes")
    return Entity(_HEADER_PARSER.parsebytes(data[start:head_end]), data, body_start, end)


def split_multipart(
    data: bytes, boundary: str, max_parts: int, start: int = 0, end: int | None = None
) -> list[tuple[int, int]] | None:
    """Where the parts of the multipart body ``data[start:end]`` lie, or None if it has no closing
    delimiter, more than ``max_parts`` parts or an unusable boundary. Preamble and epilogue are
    ignored (RFC 2046)."""
    end = len(data) if end is None else end
    try:
        delimiter = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    if not boundary or len(boundary) > 200:
        return None
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    search_from = start
    while True:
        line_start = _find_delimiter_line(data, delimiter, search_from, start, end)
        if line_start is None:
            return None
        if part_start is not None:
            # the line break before a delimiter belongs to the delimiter
            part_end = line_start
            if part_end > part_start and data[part_end - 1] == 0x0A:
                part_end -= 2 if data.startswith(b"\r\n", part_end - 2) and part_end - 2 >= part_start else 1
            parts.append((part_start, max(part_start, part_end)))
            if len(parts) > max_parts:
                return None
        after = line_start + len(delimiter)
        if data.startswith(b"--", after, end):
            return parts
        line_end = data.find(b"\n", after, end)
        part_start = search_from = end if line_end < 0 else line_end + 1


def _find_delimiter_line(data: bytes, delimiter: bytes, pos: int, start: int, end: int) -> int | None:
    """Index of the next line in ``data[pos:end]`` that is ``delimiter`` (optionally closing
    ``--``), followed only by blanks up to the line end; ``start`` is where the body begins."""
    while True:
        if pos == start and data.startswith(delimiter, start, end):
            index = start
        else:
            found = data.find(b"\n" + delimiter, max(pos - 1, start), end)
            if found < 0:
                return None
            index = found + 1
        after = index + len(delimiter)
        if data.startswith(b"--", after, end):
            after += 2
        # up to the line end only blanks may follow (at most 200: "transport padding")
        line_end = data.find(b"\n", after, min(end, after + 200))
        if line_end < 0 and end - after <= 200:
            line_end = end
        if line_end >= 0 and not data[after:line_end].strip(b" \t\r"):
            return index
        pos = index + 1


def is_encrypted(message: Entity, allow_armor_headers: bool) -> bool:
    """Is ``message`` a structurally valid OpenPGP/MIME encrypted message?

    ``allow_armor_headers``: upstream accepts armor header lines such as ``Version: …`` only in
    incoming mail (other servers' clients emit them) and refuses them in outgoing mail.
    """
    if message.content_type != "multipart/encrypted":
        return False
    if (message.param("protocol") or "").lower() != "application/pgp-encrypted":
        return False
    parts = message.parts(max_parts=2)
    if parts is None or len(parts) != 2:
        return False
    control, encrypted = parts
    # A header block with a line that is no field is read differently by other parsers (the
    # stdlib's message parser starts the body there): such a mail is not clearly encrypted.
    if any(_has_broken_field_lines(entity) for entity in (message, control, encrypted)):
        return False
    return (
        control.content_type == "application/pgp-encrypted"
        and control.body.strip() == b"Version: 1"
        and encrypted.content_type == "application/octet-stream"
        and is_armored_openpgp_message(encrypted.data, allow_armor_headers, encrypted.body_start, encrypted.body_end)
    )


def _has_broken_field_lines(entity: Entity) -> bool:
    return any(isinstance(defect, _BROKEN_FIELD_LINES) for defect in entity.headers.defects)


def is_armored_openpgp_message(
    armored: bytes, allow_armor_headers: bool, start: int = 0, end: int | None = None
) -> bool:
    """Is ``armored[start:end]`` exactly one ASCII-armored ``PGP MESSAGE`` (RFC 9580 section 6)
    of strict base64 whose packets pass :func:`is_encrypted_packet_sequence`?

    Blank lines after the armor are allowed, anything else before or after it is not. The CRC24
    line is optional; if present it must be well-formed, but its value is not compared: RFC 9580
    says a mismatch must not cause rejection, and computing it in Python would cost more than the
    whole check.
    """
    # Indices instead of slices: each copy of a 10 MB armor costs about as much as decoding it.
    end = len(armored) if end is None else end
    if not armored.startswith(ARMOR_BEGIN, start, end):
        return False
    pos = armored.find(b"\n", start, end) + 1
    if pos == 0 or armored[start + len(ARMOR_BEGIN) : pos].strip(b" \t\r\n"):
        return False
    # blank lines after the END line (a few in practice; a long run of them is refused)
    tail = armored[max(pos, end - _MAX_ARMOR_TRAILER) : end].rstrip(b" \t\r\n")
    content_end = end - _MAX_ARMOR_TRAILER + len(tail) if end - pos > _MAX_ARMOR_TRAILER else pos + len(tail)
    data_end = content_end - len(ARMOR_END)  # where the END line starts
    if data_end < pos or not armored.startswith(ARMOR_END, data_end) or armored[data_end - 1] != 0x0A:
        return False

    # armor header lines ("Key: value"), then blank lines, then base64 lines
    while _ARMOR_HEADER_RE.match(armored, pos, data_end):
        if not allow_armor_headers:
            return False
        pos = armored.find(b"\n", pos, data_end) + 1
    while armored.startswith(b"\n", pos, data_end) or armored.startswith(b"\r\n", pos, data_end):
        pos = armored.find(b"\n", pos, data_end) + 1

    data_stop = data_end - 1
    last_line_start = max(pos, armored.rfind(b"\n", pos, data_stop) + 1)
    if armored.startswith(b"=", last_line_start, data_stop):
        line_stop = data_stop - 1 if armored[data_stop - 1] == 0x0D else data_stop
        if not _ARMOR_CHECKSUM_RE.fullmatch(armored, last_line_start, line_stop):
            return False
        data_stop = last_line_start
    if not _is_strict_base64(armored, pos, data_stop):
        return False
    # whole 4-character groups: the lenient decoder would decode "QQ=" or "Q" tails
    characters = data_stop - pos - armored.count(b"\n", pos, data_stop) - armored.count(b"\r", pos, data_stop)
    if characters % 4:
        return False
    padding = armored.count(b"=", max(pos, data_stop - 8), data_stop)
    packets = _DecodedBase64(armored, pos, data_stop, characters // 4 * 3 - padding)
    try:
        return is_encrypted_packet_sequence(packets)
    except binascii.Error:  # wrong padding
        return False


class _DecodedBase64:
    """The bytes that base64 lines ``data[start:stop]`` (checked: alphabet, whole groups, "="
    only at the end) stand for, decoded a block at a time where they are read. The packet check
    reads headers only and skips packet bodies, so a 10 MB armor is not decoded into a 7.5 MB
    buffer (filtermail's peak memory); reads go forward (going back restarts the decoding)."""

    BLOCK = 1 << 16  # armor bytes decoded at a time

    def __init__(self, data: bytes | bytearray, start: int, stop: int, length: int) -> None:
        self._data, self._start, self._stop, self._length = data, start, stop, length
        self._rewind()

    def _rewind(self) -> None:
        self._next = self._start  # where the next block of armor begins
        self._carry = b""  # base64 characters of an incomplete group at the end of a block
        self._block = b""
        self._block_offset = 0  # decoded offset of self._block[0]

    def __len__(self) -> int:
        return self._length

    def _advance(self) -> None:
        end = min(self._stop, self._next + self.BLOCK)
        characters = self._carry + bytes(self._data[self._next : end]).translate(None, b"\r\n")
        usable = len(characters) if end == self._stop else len(characters) - len(characters) % 4
        self._block_offset += len(self._block)
        self._block = binascii.a2b_base64(characters[:usable])
        self._carry = characters[usable:]
        self._next = end

    def _byte(self, index: int) -> int:
        if not 0 <= index < self._length:
            raise IndexError(index)
        if index < self._block_offset:
            self._rewind()
        while index >= self._block_offset + len(self._block):
            if self._next >= self._stop:
                raise IndexError(index)
            self._advance()
        return self._block[index - self._block_offset]

    def __getitem__(self, key: int | slice) -> int | bytes:  # type: ignore[override]
        if isinstance(key, slice):
            return bytes(self._byte(i) for i in range(*key.indices(self._length)))
        return self._byte(key)


def _is_strict_base64(data: bytes, start: int, end: int) -> bool:
    """Does ``data[start:end]`` hold only base64 characters and line breaks, with "=" only at the
    very end? Checked in place, without copying; the decoder then refuses missing padding."""
    return end > start and _BASE64_LINES_RE.fullmatch(data, start, end) is not None


def is_encrypted_packet_sequence(packets: bytes) -> bool:
    """Are ``packets`` zero or more PKESK/SKESK packets followed by exactly one SEIPD packet
    that ends exactly at the end of the data?

    Only packet headers are read (RFC 9580 section 4.2): OpenPGP format (one-, two-, five-octet
    and, for the SEIPD packet only, partial body lengths) and the legacy format GnuPG still uses
    for session-key packets (one-, two-, four-octet lengths; indeterminate length is refused).
    """
    pos = 0
    end = len(packets)
    while pos < end:
        header = _packet_header(packets, pos)
        if header is None:
            return False
        tag, body_start, body_len, partial = header
        if tag == TAG_SEIPD:
            return _data_packet_end(packets, body_start, body_len, partial) == end
        if tag not in SESSION_KEY_TAGS or partial:
            return False
        pos = body_start + body_len
        if pos > end:
            return False
    return False


def _packet_header(data: bytes, pos: int) -> tuple[int, int, int, bool] | None:
    """(tag, body start, body length, is partial length) of the packet at ``pos``, or None."""
    if pos + 2 > len(data):
        return None
    first = data[pos]
    if not first & 0x80:
        return None
    if first & 0x40:  # OpenPGP format
        tag = first & 0x3F
        length = _new_format_length(data, pos + 1)
        if length is None:
            return None
        body_start, body_len, partial = length
        return tag, body_start, body_len, partial
    tag = (first >> 2) & 0x0F
    length_type = first & 0x03
    if length_type == 3:  # indeterminate
        return None
    size = (1, 2, 4)[length_type]
    if pos + 1 + size > len(data):
        return None
    body_len = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
    return tag, pos + 1 + size, body_len, False


def _new_format_length(data: bytes, pos: int) -> tuple[int, int, bool] | None:
    """(body start, body length, is partial) of an OpenPGP-format length at ``pos``."""
    if pos >= len(data):
        return None
    octet = data[pos]
    if octet < 192:
        return pos + 1, octet, False
    if octet < 224:
        if pos + 2 > len(data):
            return None
        return pos + 2, ((octet - 192) << 8) + data[pos + 1] + 192, False
    if octet == 255:
        if pos + 5 > len(data):
            return None
        return pos + 5, int.from_bytes(data[pos + 1 : pos + 5], "big"), False
    return pos + 1, 1 << (octet & 0x1F), True


def _data_packet_end(data: bytes, body_start: int, body_len: int, partial: bool) -> int | None:
    """End offset of a data packet, following its partial body length chunks."""
    pos = body_start + body_len
    while partial:
        length = _new_format_length(data, pos)
        if length is None:
            return None
        body_start, body_len, partial = length
        pos = body_start + body_len
    return pos


def is_securejoin_request(message: Entity) -> bool:
    """A Secure-Join ``vc-request``/``vg-request``: the header says so and the mail is a multipart
    with exactly one ``text/plain`` part whose text is just ``Secure-Join: <step>``."""
    if (message.header("secure-join") or "").strip() not in SECUREJOIN_REQUESTS:
        return False
    if not message.content_type.startswith("multipart/"):
        return False
    parts = message.parts(max_parts=1)
    if parts is None or len(parts) != 1:
        return False
    part = parts[0]
    if part.content_type != "text/plain" or part.body_end - part.body_start > 1000:
        return False
    expected = {f"secure-join: {step}".encode() for step in SECUREJOIN_REQUESTS}
    return part.body.strip().lower() in expected


def is_autocrypt_setup_message(message: Entity) -> bool:
    """The Autocrypt Setup Message shape (its key is symmetrically encrypted inside): Subject
    ``Autocrypt Setup Message`` (upstream's test) or the ``Autocrypt-Setup-Message: v1`` header
    of the Autocrypt spec, and ``multipart/mixed``. Only allowed when sent to oneself. The header
    counts because Postfix's submission cleanup has replaced the Subject with ``[...]`` by the
    time filtermail's milter sees the mail."""
    return (
        decoded_header(message, "subject") == "Autocrypt Setup Message"
        or (message.header("autocrypt-setup-message") or "").strip().lower() == "v1"
    ) and message.content_type == "multipart/mixed"


def is_mailer_daemon_report(message: Entity) -> bool:
    """A delivery status report from a mailer daemon: an ``Auto-Submitted`` header, a From address
    starting with ``mailer-daemon@`` and ``multipart/report``."""
    return (
        bool((message.header("auto-submitted") or "").strip())
        and (from_address(message) or "").lower().startswith("mailer-daemon@")
        and message.content_type == "multipart/report"
    )


def mail_kind(message: Entity) -> str:
    """What an accepted mail was, for the metrics: "encrypted" (OpenPGP/MIME), "mailer-daemon"
    (a delivery report) or "unencrypted" (Secure-Join requests, passthrough)."""
    if message.content_type == "multipart/encrypted":
        return "encrypted"
    if is_mailer_daemon_report(message):
        return "mailer-daemon"
    return "unencrypted"


def from_address(message: Entity) -> str | None:
    """The address of the (first) From header, or None if there is none."""
    value = message.header("from")
    if value is None:
        return None
    found = parseaddr(value.strip())[1]
    if not found:
        # the stdlib cannot read an address at a domain literal (relays without a domain name)
        literal = _DOMAIN_LITERAL_ADDRESS_RE.search(value)
        found = literal.group(1) if literal else ""
    return found or None


def decoded_header(message: Entity, name: str) -> str | None:
    """A header value with RFC 2047 encoded words decoded and folding removed."""
    value = message.header(name)
    if value is None:
        return None
    try:
        return str(make_header(decode_header(value))).strip()
    except (ValueError, LookupError):
        return value.strip()
