"""Hostile mail for filtermail: malformed MIME and OpenPGP (truncated armor, nested multiparts,
wrong part counts, huge headers, bad encodings, flipped bytes).

The pure check (chatmaild.encryption) is fuzzed at volume (>= 10^4 messages); a smaller number
goes through filtermail's SMTP server. Nothing raises but MalformedMessage, every mail gets a
reply code, and nothing passes that an independent reading (the stdlib's email parser and a
strict armor reader) does not see as OpenPGP/MIME. CHATMAIL_FUZZ_SCALE=N runs N times as many.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.errors
import email.message
import email.policy
import os
import random
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmaild import encryption, testmail
from chatmaild.encryption import MalformedMessage

from test_filtermail_smtp import DOMAIN, Filtermail, Sink, start_filtermail, stop_filtermail

SCALE = float(os.environ.get("CHATMAIL_FUZZ_SCALE", "1"))
VARIANTS = 5  # messages checked per generated example: the example and 4 byte-level mutations
PURE_EXAMPLES = max(1, int(2000 * SCALE))  # * VARIANTS = 10^4 messages
SMTP_EXAMPLES = max(1, int(150 * SCALE))
SENDER = f"fuzzsender@{DOMAIN}"
RECIPIENT = f"fuzzrecipient@{DOMAIN}"
CRLF = b"\r\n"

# --- the independent reading ------------------------------------------------------------------

# a stray CR in a line break carries no data: harmless, as are blank lines among the data
_ARMOR = re.compile(
    rb"-----BEGIN PGP MESSAGE-----[ \t\r]*\n"
    rb"(?P<headers>(?:[A-Za-z0-9-]+: [^\r\n]*\r*\n)*)"
    rb"(?:[ \t\r]*\n)+"
    rb"(?P<data>[A-Za-z0-9+/=\r\n]+?\n)"
    rb"(?:=[A-Za-z0-9+/]{4}\r*\n)?"
    rb"-----END PGP MESSAGE-----[ \t\r\n]*"
)


def _structural_defects(message: email.message.Message) -> list[object]:
    """Defects that change what the message's structure is (a malformed field such as ": v"
    does not)."""
    structural = (email.errors.MissingHeaderBodySeparatorDefect, email.errors.FirstHeaderLineIsContinuationDefect,
                  email.errors.StartBoundaryNotFoundDefect, email.errors.CloseBoundaryNotFoundDefect,
                  email.errors.MultipartInvariantViolationDefect, email.errors.NoBoundaryInMultipartDefect)
    return [defect for defect in message.defects if isinstance(defect, structural)]


def truly_openpgp_mime(data: bytes, allow_armor_headers: bool) -> bool:
    """RFC 3156 as the stdlib reads it: multipart/encrypted, protocol application/pgp-encrypted,
    exactly a "Version: 1" control part and an octet-stream part holding one armored message
    whose packets are session keys and one encrypted data packet."""
    message = email.message_from_bytes(bytes(data), policy=email.policy.compat32)
    if message.get_content_type() != "multipart/encrypted" or _structural_defects(message):
        return False
    if str(message.get_param("protocol") or "").lower() != "application/pgp-encrypted":
        return False
    parts = message.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        return False
    control, encrypted = parts
    if control.get_content_type() != "application/pgp-encrypted" or encrypted.get_content_type() != "application/octet-stream":
        return False
    if control.get_payload().strip() != "Version: 1" or control.is_multipart() or encrypted.is_multipart():
        return False
    if _structural_defects(control) or _structural_defects(encrypted):
        return False
    armored = encrypted.get_payload().encode("utf-8", "surrogateescape")
    match = _ARMOR.fullmatch(armored)
    if match is None or (match["headers"] and not allow_armor_headers):
        return False
    try:
        packets = base64.b64decode(re.sub(rb"\s", b"", match["data"]), validate=True)
    except binascii.Error:
        return False
    return encryption.is_encrypted_packet_sequence(packets)


# --- hostile mail ------------------------------------------------------------------------------


def valid_mail(rng: random.Random) -> bytes:
    payload = testmail.make_openpgp_payload(rng.randrange(1, 3000), recipients=rng.randrange(0, 3),
                                            partial_chunk=rng.choice([None, None, 512]))
    armored = testmail.armor(payload, checksum=rng.random() < 0.5, line_length=rng.choice([64, 76]))
    return testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT, armored=armored))


def _replace_once(data: bytes, old: bytes, new: bytes, rng: random.Random) -> bytes:
    positions = [m.start() for m in re.finditer(re.escape(old), data)]
    if not positions:
        return data
    at = rng.choice(positions)
    return data[:at] + new + data[at + len(old):]


def _boundary(data: bytes) -> bytes:
    found = re.search(rb'boundary="([^"]+)"', data)
    return found.group(1) if found else b"none"


def _parts(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(head up to and including the first delimiter line, the parts, the closing delimiter on)."""
    delimiter = b"--" + _boundary(data)
    pieces = data.split(delimiter)
    return pieces[0], pieces[1:-1], pieces[-1] if len(pieces) > 1 else b""


def _join(head: bytes, parts: list[bytes], tail: bytes, boundary: bytes) -> bytes:
    return head + b"".join(b"--" + boundary + part for part in parts) + b"--" + boundary + tail


def _armor_region(data: bytes) -> tuple[int, int]:
    start = data.find(b"-----BEGIN PGP MESSAGE-----")
    end = data.find(b"-----END PGP MESSAGE-----")
    return (start, end) if 0 <= start < end else (0, len(data))


MUTATIONS = [
    "truncate_armor", "drop_end_line", "bad_base64_char", "bad_padding", "not_encrypted_packets",
    "literal_packet", "one_part", "three_parts", "zero_parts", "nested_multipart", "wrapped_in_mixed",
    "huge_header", "many_headers", "non_utf8_header", "encoded_word_type", "base64_transfer_encoding",
    "quoted_printable", "lf_only", "wrong_boundary", "no_closing_delimiter", "protocol_missing",
    "protocol_wrong", "duplicate_content_type", "armor_headers", "version_2", "control_type",
    "octet_type", "text_before_armor", "text_after_armor", "two_armors", "empty_body", "cut_anywhere",
    "header_only", "null_bytes", "long_line", "uppercase_types",
]


def mutate(data: bytes, mutation: str, rng: random.Random) -> bytes:
    start, end = _armor_region(data)
    boundary = _boundary(data)
    if mutation == "truncate_armor":
        return data[: rng.randrange(start, end + 1)]
    if mutation == "drop_end_line":
        return data.replace(b"-----END PGP MESSAGE-----", b"")
    if mutation == "bad_base64_char":
        at = rng.randrange(start + 40, max(start + 41, end))
        return data[:at] + rng.choice([b"!", b".", b"*", b"\xff", b" ", b"-"]) + data[at + 1:]
    if mutation == "bad_padding":
        return _replace_once(data, b"\r\n-----END", b"=\r\n-----END", rng)
    if mutation in ("not_encrypted_packets", "literal_packet"):
        payload = (rng.randbytes(rng.randrange(0, 300)) if mutation == "not_encrypted_packets"
                   else testmail.openpgp_packet(11, b"b\x00" + rng.randbytes(50)))
        return data[:start] + testmail.armor(payload).encode() + data[end + len(b"-----END PGP MESSAGE-----\r\n"):]
    head, parts, tail = _parts(data)
    if not parts or b"\r\n\r\n" not in data:
        return data  # the structural mutations below need parts and a CRLF header block
    if mutation == "one_part":
        return _join(head, parts[:1], tail, boundary)
    if mutation == "three_parts":
        return _join(head, parts + [rng.choice(parts)], tail, boundary)
    if mutation == "zero_parts":
        return _join(head, [], tail, boundary)
    if mutation == "nested_multipart":
        inner = _join(b'\r\nContent-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
                      b'boundary="inner"\r\n\r\n', [p.replace(b"--" + boundary, b"--inner") for p in parts], b"--\r\n", b"inner")
        return _join(head, [parts[0], b"\r\n" + inner.lstrip(b"\r\n")], tail, boundary)
    if mutation == "wrapped_in_mixed":
        header_end = data.index(b"\r\n\r\n")
        return (b"From: <" + SENDER.encode() + b">\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
                b"--outer\r\n" + data[:header_end] + data[header_end:] + b"\r\n--outer--\r\n")
    if mutation == "huge_header":
        size = rng.choice([1000, 16_000, 17_000, 100_000, 300_000])
        return b"X-Huge: " + b"h" * size + CRLF + data
    if mutation == "many_headers":
        return b"".join(b"X-Many-%d: v\r\n" % i for i in range(rng.choice([100, 3000, 20_000]))) + data
    if mutation == "non_utf8_header":
        return b"Subject: \xff\xfe\xc3(\x80\r\n" + data
    if mutation == "encoded_word_type":
        return _replace_once(data, b"multipart/encrypted", b"=?utf-8?q?multipart/encrypted?=", rng)
    if mutation == "base64_transfer_encoding" and len(parts) >= 2:
        armor_text = parts[1].split(b"\r\n\r\n", 1)[-1]
        encoded = base64.encodebytes(armor_text).replace(b"\n", b"\r\n")
        return _join(head, [parts[0], b"\r\nContent-Type: application/octet-stream\r\n"
                            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded], tail, boundary)
    if mutation == "quoted_printable":
        return _replace_once(data, b"Content-Description: OpenPGP encrypted message",
                             b"Content-Transfer-Encoding: quoted-printable", rng).replace(b"==\r\n", b"=3D=3D\r\n")
    if mutation == "lf_only":
        return data.replace(CRLF, b"\n")
    if mutation == "wrong_boundary":
        return data.replace(b'boundary="' + boundary, b'boundary="x' + boundary, 1)
    if mutation == "no_closing_delimiter":
        return data.replace(b"--" + boundary + b"--", b"")
    if mutation == "protocol_missing":
        return re.sub(rb'protocol="[^"]*";?', b"", data, count=1)
    if mutation == "protocol_wrong":
        return data.replace(b'protocol="application/pgp-encrypted"', b'protocol="application/pgp-signature"', 1)
    if mutation == "duplicate_content_type":
        return b"Content-Type: text/plain\r\n" + data
    if mutation == "armor_headers":
        return data.replace(b"-----BEGIN PGP MESSAGE-----\r\n", b"-----BEGIN PGP MESSAGE-----\r\nVersion: X\r\n", 1)
    if mutation == "version_2":
        return data.replace(b"Version: 1", b"Version: 2", 1)
    if mutation == "control_type":
        return data.replace(b"Content-Type: application/pgp-encrypted", b"Content-Type: text/plain", 1)
    if mutation == "octet_type":
        return data.replace(b"Content-Type: application/octet-stream", b"Content-Type: text/plain", 1)
    if mutation == "text_before_armor":
        return data[:start] + b"hello\r\n" + data[start:]
    if mutation == "text_after_armor":
        return _replace_once(data, b"-----END PGP MESSAGE-----\r\n", b"-----END PGP MESSAGE-----\r\nplain text\r\n", rng)
    if mutation == "two_armors":
        armor_text = data[start:end] + b"-----END PGP MESSAGE-----\r\n"
        return data[:start] + armor_text + data[start:]
    if mutation == "empty_body":
        return data[: data.index(b"\r\n\r\n") + 4]
    if mutation == "cut_anywhere":
        return data[: rng.randrange(len(data) + 1)]
    if mutation == "header_only":
        return data[: data.index(b"\r\n\r\n")]
    if mutation == "null_bytes":
        at = rng.randrange(len(data))
        return data[:at] + b"\x00" + data[at:]
    if mutation == "long_line":
        return _replace_once(data, b"\r\n-----END", b"A" * rng.choice([998, 5000, 70_000]) + b"\r\n-----END", rng)
    if mutation == "uppercase_types":
        return data.replace(b"multipart/encrypted", b"MULTIPART/ENCRYPTED").replace(b"application/", b"Application/")
    return data


def byte_mutation(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not out:
            break
        at = rng.randrange(len(out))
        kind = rng.randrange(3)
        if kind == 0:
            out[at] = rng.randrange(256)
        elif kind == 1:
            del out[at : at + rng.randrange(1, 50)]
        else:
            out[at:at] = rng.choice([b"\r\n", b"--", b"=", b"\r\n\r\n", b";", b'"', rng.randbytes(5)])
    return bytes(out)


def hostile_mail() -> st.SearchStrategy[tuple[int, list[str]]]:
    """A seed and up to three structural mutations; :func:`build` makes the mail from them (outside
    the strategy: building uses the stdlib's global random for Message-IDs)."""
    return st.tuples(st.integers(0, 2**32 - 1), st.lists(st.sampled_from(MUTATIONS), max_size=3))


def build(mail: tuple[int, list[str]]) -> tuple[bytes, random.Random]:
    seed, mutations = mail
    rng = random.Random(seed)
    data = valid_mail(rng)
    for mutation in mutations:
        data = mutate(data, mutation, rng)
    return data, rng


# --- the pure check at volume ------------------------------------------------------------------


class Tally:
    checked = 0
    passed = 0


def check_one(data: bytes) -> None:
    """Raises nothing but MalformedMessage; passes only what the independent reading accepts;
    the same verdict for a bytes and a bytearray buffer (filtermail hands on a bytearray)."""
    for allow_armor_headers in (False, True):
        verdicts = []
        for buffer in (data, bytearray(data)):
            try:
                verdicts.append(encryption.is_encrypted(encryption.parse_entity(buffer), allow_armor_headers))
            except MalformedMessage:
                verdicts.append(False)
        assert verdicts[0] == verdicts[1]
        if verdicts[0]:
            assert truly_openpgp_mime(data, allow_armor_headers), data
            Tally.passed += 1
    Tally.checked += 1


@settings(max_examples=PURE_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_mail())
def test_pure_check_never_passes_what_is_not_openpgp_mime(mail: tuple[int, list[str]]) -> None:
    data, rng = build(mail)
    check_one(data)
    for _ in range(VARIANTS - 1):
        check_one(byte_mutation(data, rng))


def test_pure_check_volume_and_that_valid_mail_passes() -> None:
    """After the fuzzing above (file order): it checked enough, and valid mail still passes."""
    assert Tally.checked >= PURE_EXAMPLES * VARIANTS >= min(10**4, 10**4 * SCALE), Tally.checked
    rng = random.Random(1)
    for _ in range(20):
        data = valid_mail(rng)
        assert encryption.is_encrypted(encryption.parse_entity(data), False)
        assert truly_openpgp_mime(data, False)
    print(f"{Tally.checked} messages checked, {Tally.passed} verdicts 'encrypted'")


# --- through the SMTP server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_filtermail(tmp_path_factory) -> Iterator[tuple[Filtermail, Sink]]:
    from test_filtermail_smtp import free_port

    tmp_path: Path = tmp_path_factory.mktemp("fuzz-filtermail")
    sink = Sink(free_port())
    sink.start()
    filtermail = start_filtermail(tmp_path, "outgoing", sink.port,
                                  max_user_send_per_minute=10**6, max_user_send_burst_size=10**6)
    yield filtermail, sink
    stop_filtermail(filtermail)  # exits cleanly, no traceback in its log
    sink.stop()


SMTP_REPLIES: list[int] = []


@settings(max_examples=SMTP_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(hostile_mail())
def test_smtp_server_answers_every_hostile_mail(fuzz_filtermail: tuple[Filtermail, Sink], mail: tuple[int, list[str]]) -> None:
    filtermail, sink = fuzz_filtermail
    data, _ = build(mail)
    try:
        with filtermail.client() as client:
            client.sendmail(SENDER, [RECIPIENT], data)
        code = 250
    except smtplib.SMTPResponseException as error:
        code = error.smtp_code
    SMTP_REPLIES.append(code)
    assert 250 <= code < 600 and code != 421, code  # a reply, not a hang-up
    assert filtermail.process.poll() is None
    for received in sink.received:
        assert truly_openpgp_mime(received.content, allow_armor_headers=False), received.content[:3000]


def test_smtp_fuzzing_got_replies_and_valid_mail_still_passes(fuzz_filtermail: tuple[Filtermail, Sink]) -> None:
    filtermail, sink = fuzz_filtermail
    assert len(SMTP_REPLIES) >= SMTP_EXAMPLES
    print(f"SMTP replies: { {code: SMTP_REPLIES.count(code) for code in sorted(set(SMTP_REPLIES))} }")
    before = len(sink.received)
    with filtermail.client() as client:
        client.sendmail(SENDER, [RECIPIENT], valid_mail(random.Random(2)))
    assert len(sink.received) == before + 1
