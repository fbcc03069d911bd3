"""Unit tests of the encryption rules (chatmaild.encryption) on raw mail bytes."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild import testmail
from chatmaild.encryption import (
    MalformedMessage,
    from_address,
    is_armored_openpgp_message,
    is_autocrypt_setup_message,
    is_encrypted,
    is_encrypted_packet_sequence,
    is_mailer_daemon_report,
    is_securejoin_request,
    parse_entity,
    split_multipart,
)
from chatmaild.testmail import armor, make_openpgp_payload, openpgp_packet

MAIL_DATA = Path(__file__).parent / "mail-data"
SENDER = "sender@chat.example.org"
RECIPIENT = "recipient@example.org"


def entity(message) -> object:
    return parse_entity(testmail.to_bytes(message))


def encrypted_with_armor(armored: str, outgoing: bool = True) -> bool:
    message = testmail.make_encrypted_message(SENDER, RECIPIENT, armored=armored)
    return is_encrypted(entity(message), allow_armor_headers=not outgoing)


def replace_in_encrypted(old: bytes, new: bytes) -> bool:
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    assert old in raw
    return is_encrypted(parse_entity(raw.replace(old, new, 1)), allow_armor_headers=False)


# --- MIME shape


def test_valid_encrypted_message():
    assert is_encrypted(entity(testmail.make_encrypted_message(SENDER, RECIPIENT)), False)
    assert is_encrypted(entity(testmail.make_encrypted_message(SENDER, RECIPIENT)), True)


def test_lf_line_endings_are_accepted():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT)).replace(b"\r\n", b"\n")
    assert is_encrypted(parse_entity(raw), False)


def test_plain_text_is_not_encrypted():
    assert not is_encrypted(entity(testmail.make_plain_message(SENDER, RECIPIENT)), False)


def test_armor_in_plain_text_is_not_encrypted():
    text = armor(make_openpgp_payload())
    assert not is_encrypted(entity(testmail.make_plain_message(SENDER, RECIPIENT, text=text)), False)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"multipart/encrypted;", b"multipart/mixed;"),
        (b'protocol="application/pgp-encrypted";', b'protocol="application/pgp-signature";'),
        (b'protocol="application/pgp-encrypted";', b""),
        (b"Content-Type: application/pgp-encrypted\r\n", b"Content-Type: text/plain\r\n"),
        (b"Content-Type: application/pgp-encrypted\r\n", b""),
        (b"Content-Type: application/octet-stream;", b"Content-Type: text/plain;"),
        (b"Version: 1\r\n", b"Version: 2\r\n"),
        (b"Version: 1\r\n", b"Version: 1 extra\r\n"),
        (b"Version: 1\r\n", b"\r\n"),
        (b'boundary="', b'boundary="x'),  # delimiters no longer match
    ],
    ids=[
        "multipart-mixed", "wrong-protocol", "no-protocol", "first-part-text", "first-part-no-type",
        "second-part-text", "version-2", "version-garbage", "version-missing", "wrong-boundary",
    ],
)
def test_wrong_mime_shapes_are_refused(old: bytes, new: bytes):
    assert not replace_in_encrypted(old, new)


def test_the_replacements_above_would_otherwise_pass():
    assert replace_in_encrypted(b"Version: 1\r\n", b"  Version: 1  \r\n")
    assert replace_in_encrypted(b'protocol="application/pgp-encrypted"', b'protocol="Application/PGP-Encrypted"')


def test_missing_second_part_is_refused():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    head, _, rest = raw.partition(b"Version: 1\r\n")
    boundary = parse_entity(raw).param("boundary").encode()
    truncated = head + b"Version: 1\r\n\r\n--" + boundary + b"--\r\n"
    assert not is_encrypted(parse_entity(truncated), False)


def test_missing_close_delimiter_is_refused():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    boundary = parse_entity(raw).param("boundary").encode()
    close = b"--" + boundary + b"--\r\n"
    assert raw.endswith(close)
    assert not is_encrypted(parse_entity(raw[: -len(close)]), False)
    assert is_encrypted(parse_entity(raw.replace(close, close[:-2] + b" \t\r\n")), False)


def test_three_parts_are_refused():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    boundary = parse_entity(raw).param("boundary").encode()
    close = b"--" + boundary + b"--"
    extra = b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nhello\r\n" + close
    assert not is_encrypted(parse_entity(raw.replace(close, extra)), False)


def parts_of(body: bytes, boundary: str, max_parts: int, start: int = 0, end: int | None = None) -> list[bytes] | None:
    ranges = split_multipart(body, boundary, max_parts, start, end)
    return None if ranges is None else [body[a:b] for a, b in ranges]


def test_split_multipart_stops_after_max_parts():
    body = b"preamble\r\n" + b"".join(b"--b\r\npart %d\r\n" % i for i in range(5)) + b"--b--\r\nepilogue"
    assert parts_of(body, "b", max_parts=5) == [b"part %d" % i for i in range(5)]
    assert parts_of(body, "b", max_parts=4) is None
    assert parts_of(b"--b--\r\n", "b", max_parts=2) == []
    assert parts_of(b"--b\r\nno close delimiter\r\n", "b", max_parts=2) is None
    assert parts_of(b"--bx\r\nx\r\n--bx--\r\n", "b", max_parts=2) is None  # not our boundary
    assert parts_of(body, "", max_parts=5) is None
    assert parts_of(b"--b\r\n\r\n--b\r\n--b  \t\r\nlast\n--b--", "b", max_parts=5) == [b"", b"", b"last"]


def test_split_multipart_stays_within_its_range():
    body = b"--b\r\none\r\n--b--\r\n"
    outer = b"--b\r\nbefore\r\n" + body + b"--b\r\nafter\r\n--b--\r\n"
    start = outer.index(body)
    assert parts_of(outer, "b", 5, start, start + len(body)) == [b"one"]
    assert parts_of(outer, "b", 5, start, start + len(body) - 3) is None  # close delimiter cut off


def test_swapped_parts_are_refused():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    message = parse_entity(raw)
    boundary = message.param("boundary")
    first, second = parts_of(message.body, boundary, 2)
    delimiter = f"--{boundary}".encode()
    body = delimiter + b"\r\n" + second + b"\r\n" + delimiter + b"\r\n" + first + b"\r\n" + delimiter + b"--\r\n"
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    assert not is_encrypted(parse_entity(head + body), False)


def test_nested_multipart_is_refused():
    inner = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    inner_headers_end = inner.index(b"\r\n\r\n")
    content_type_start = inner.index(b"Content-Type: multipart/encrypted")
    inner_part = inner[content_type_start:]  # Content-Type header + body of the inner message
    body = (
        b"--outer\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        b"--outer\r\n" + inner_part + b"\r\n--outer--\r\n"
    )
    head = (
        inner[:content_type_start]
        + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="outer"\r\n\r\n'
    )
    assert inner_headers_end > content_type_start
    assert not is_encrypted(parse_entity(head + body), False)


def test_preamble_and_epilogue_are_ignored():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert is_encrypted(parse_entity(head + sep + b"This is OpenPGP/MIME.\r\n" + body + b"epilogue\r\n"), False)


def test_non_ascii_garbage_is_refused_not_crashing():
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    garbage = bytes(range(128, 256)) * 4
    assert not is_encrypted(parse_entity(raw.replace(b"Version: 1", garbage)), False)
    assert not is_encrypted(parse_entity(garbage + b"\r\n\r\n" + garbage), False)
    assert not is_encrypted(parse_entity(os.urandom(5000)), False)
    boundary_non_ascii = raw.replace(b'boundary="', 'boundary="\u00e4'.encode(), 1)
    assert not is_encrypted(parse_entity(boundary_non_ascii), False)


def test_huge_header_block_is_malformed():
    raw = testmail.to_bytes(testmail.make_plain_message(SENDER, RECIPIENT))
    huge = b"X-Filler: " + b"a" * 100 + b"\r\n"
    with pytest.raises(MalformedMessage):
        parse_entity(huge * 20000 + raw)
    with pytest.raises(MalformedMessage):
        parse_entity(b"X: " + b"a" * (2 << 20))  # no body at all
    assert parse_entity(huge * 100 + raw).content_type == "text/plain"


def test_message_without_body():
    message = parse_entity(b"From: <a@b.org>\r\nSubject: x\r\n")
    assert message.body == b""
    assert from_address(message) == "a@b.org"
    assert parse_entity(b"\r\nbody only").body == b"body only"


# --- armor


def test_gnupg_messages_pass():
    """Real GnuPG 2.2 output: legacy-format PKESK packets and an SEIPD with partial lengths."""
    for name in ("gnupg-two-recipients.asc", "gnupg-partial-lengths.asc"):
        armored = (MAIL_DATA / name).read_text().replace("\n", "\r\n")
        assert encrypted_with_armor(armored), name


@pytest.mark.parametrize(
    "name", ["deltachat-2.65-encrypted.eml", "deltachat-2.65-securejoin-vc-request.eml"]
)
def test_delta_chat_messages_pass(name: str):
    """Real Delta Chat 2.65 output (captured from a relay's maildir): PKESK v6 / SKESK v6 and a
    SEIPD v2 packet; core 2.x encrypts even the Secure-Join vc-request (with the QR's secret)."""
    raw = (MAIL_DATA / name).read_bytes().replace(b"\n", b"\r\n")
    message = parse_entity(raw)
    assert is_encrypted(message, allow_armor_headers=False)
    assert is_encrypted(message, allow_armor_headers=True)
    assert from_address(message).endswith(".test")


def test_armor_without_checksum_passes():
    assert encrypted_with_armor(armor(make_openpgp_payload(), checksum=False))


def test_checksum_is_checked_for_form_not_value():
    payload = make_openpgp_payload()
    good = armor(payload)
    checksum_line = [line for line in good.split("\r\n") if line.startswith("=")][0]
    wrong_value = "=" + base64.b64encode(bytes(3)).decode()
    assert wrong_value != checksum_line
    assert encrypted_with_armor(good.replace(checksum_line, wrong_value))
    for bad in ("=abc", "=abcde", "=ab!d", "=", "==ab"):
        assert not encrypted_with_armor(good.replace(checksum_line, bad)), bad


def test_base64_padding_is_checked():
    payload = make_openpgp_payload(103)  # 191 bytes: the armor ends in one "="
    good = armor(payload, checksum=False)
    assert good.count("=") == 1 and encrypted_with_armor(good)
    assert not encrypted_with_armor(good.replace("=", ""))
    assert not encrypted_with_armor(good.replace("=\r\n", "=\r\nAAAA\r\n"))


def test_long_run_of_blank_lines_after_the_armor_is_refused():
    armored = armor(make_openpgp_payload())
    assert encrypted_with_armor(armored + "\r\n" * 100)
    assert not encrypted_with_armor(armored + "\r\n" * 3000)


@pytest.mark.parametrize("line_length", [64, 76, 4, 10000])
def test_line_lengths(line_length: int):
    assert encrypted_with_armor(armor(make_openpgp_payload(), line_length=line_length))


def test_armor_headers_only_incoming():
    armored = armor(make_openpgp_payload(), headers=[("Version", "ProtonMail"), ("Comment", "x: y")])
    assert not encrypted_with_armor(armored, outgoing=True)
    assert encrypted_with_armor(armored, outgoing=False)
    no_blank = armored.replace("x: y\r\n\r\n", "x: y\r\n")
    assert encrypted_with_armor(no_blank, outgoing=False)


def test_armor_without_blank_line_after_begin_passes():
    armored = armor(make_openpgp_payload()).replace("-----\r\n\r\n", "-----\r\n", 1)
    assert encrypted_with_armor(armored)


def test_bad_base64_is_refused():
    armored = armor(make_openpgp_payload(), line_length=64)
    lines = armored.split("\r\n")
    for bad_char in ("!", " ", "\u00e4", "-", "="):
        broken = lines[:]
        broken[3] = broken[3][:10] + bad_char + broken[3][11:]
        assert not encrypted_with_armor("\r\n".join(broken)), repr(bad_char)
    truncated = lines[:]
    truncated[3] = truncated[3][:-1]  # length no longer a multiple of 4
    assert not encrypted_with_armor("\r\n".join(truncated))


@pytest.mark.parametrize(
    "armored",
    [
        "",
        "-----BEGIN PGP MESSAGE-----\r\n",
        "-----END PGP MESSAGE-----\r\n",
        "-----BEGIN PGP MESSAGE-----\r\n\r\n-----END PGP MESSAGE-----\r\n",
        "-----BEGIN PGP MESSAGE-----\r\n\r\nHELLOWORLD\r\n-----END PGP MESSAGE-----\r\n",
        "-----BEGIN PGP MESSAGE-----\r\n\r\n=njUN\r\n-----END PGP MESSAGE-----\r\n",
        "-----BEGIN PGP MESSAGE-----\r\nHi!\r\n-----END PGP MESSAGE-----\r\n",
        "-----BEGIN PGP SIGNATURE-----\r\n\r\nwcBMA0\r\n-----END PGP SIGNATURE-----\r\n",
    ],
    ids=["empty", "begin-only", "end-only", "no-data", "not-base64", "checksum-only", "cleartext", "signature"],
)
def test_broken_armors_are_refused(armored: str):
    assert not encrypted_with_armor(armored)
    assert not is_armored_openpgp_message(armored.encode(), allow_armor_headers=True)


def test_text_around_the_armor_is_refused():
    armored = armor(make_openpgp_payload())
    assert encrypted_with_armor(armored + "\r\n\r\n")
    assert not encrypted_with_armor("Hello\r\n" + armored)
    assert not encrypted_with_armor(armored + "trailing text\r\n")
    assert not encrypted_with_armor(armored.replace("-----END", "x-----END"))
    assert not encrypted_with_armor(armored.replace("MESSAGE-----\r\n", "MESSAGE----- x\r\n", 1))
    assert not encrypted_with_armor(armored + armor(make_openpgp_payload()))


def test_non_base64_literal_packet_is_refused():
    literal = openpgp_packet(11, b"b\x00\x00\x00\x00\x00Hello world!")
    assert not encrypted_with_armor(armor(literal))


# --- packets


def pkesk(legacy: bool = False) -> bytes:
    return openpgp_packet(1, b"\x03" + os.urandom(90), legacy=legacy)


def seipd(size: int = 100, partial_chunk: int | None = None) -> bytes:
    return openpgp_packet(18, b"\x01" + os.urandom(size), partial_chunk=partial_chunk)


@pytest.mark.parametrize(
    "packets",
    [
        pkesk() + seipd(),
        pkesk(legacy=True) + pkesk() + seipd(),
        openpgp_packet(3, os.urandom(40)) + seipd(),
        seipd(),  # upstream accepts an SEIPD without session key packets
        pkesk() + seipd(0),
        pkesk() + seipd(190),  # one-octet length
        pkesk() + seipd(5000),  # two-octet length
        pkesk() + seipd(9000),  # five-octet length
        pkesk() + seipd(5000, partial_chunk=512),
        pkesk() + seipd(4095, partial_chunk=1024),  # last chunk of length 0
        pkesk() + openpgp_packet(1, os.urandom(70000), legacy=True) + seipd(),  # four-octet legacy
    ],
)
def test_valid_packet_sequences(packets: bytes):
    assert is_encrypted_packet_sequence(packets)


@pytest.mark.parametrize(
    "packets",
    [
        b"",
        pkesk(),  # no data packet
        seipd() + pkesk(),  # wrong order
        pkesk() + seipd() + seipd(),  # two data packets
        pkesk() + seipd() + b"\x00",  # trailing garbage
        pkesk() + seipd()[:-1],  # truncated
        pkesk() + openpgp_packet(20, os.urandom(100)),  # AEAD packet (upstream: SEIPD only)
        pkesk() + openpgp_packet(9, os.urandom(100)),  # SED without integrity protection
        pkesk() + openpgp_packet(11, os.urandom(100)),  # literal data
        openpgp_packet(2, os.urandom(50)) + seipd(),  # signature before data
        b"\x00" + seipd(),  # not a packet tag
        b"\x87" + seipd(),  # legacy indeterminate length
        b"\xc1",  # header without length
        b"\xc1\xff\x00\x00",  # truncated five-octet length
        b"\xc1\xe9" + os.urandom(512) + seipd(),  # partial length on a PKESK
        b"\xd2\xe9" + os.urandom(100),  # partial chunk longer than the data
    ],
)
def test_invalid_packet_sequences(packets: bytes):
    assert not is_encrypted_packet_sequence(packets)


def test_partial_length_packet_as_armor():
    assert encrypted_with_armor(armor(make_openpgp_payload(20000, partial_chunk=4096)))


# --- exceptions


def test_securejoin_requests():
    for step in ("vc-request", "vg-request"):
        assert is_securejoin_request(entity(testmail.make_securejoin_request(SENDER, RECIPIENT, step=step)))
    upper = testmail.make_securejoin_request(SENDER, RECIPIENT, text="SECURE-JOIN: VC-REQUEST")
    assert is_securejoin_request(entity(upper))


@pytest.mark.parametrize(
    "message",
    [
        testmail.make_securejoin_request(SENDER, RECIPIENT, text="Buy viagra!"),
        testmail.make_securejoin_request(SENDER, RECIPIENT, step="vc-auth-required"),
        testmail.make_securejoin_request(SENDER, RECIPIENT, text="Secure-Join: vc-request\r\nmore"),
        testmail.make_plain_message(SENDER, RECIPIENT, text="Secure-Join: vc-request", extra_headers=["Secure-Join: vc-request"]),
    ],
    ids=["other-text", "later-step", "extra-text", "not-multipart"],
)
def test_fake_securejoin_requests(message):
    assert not is_securejoin_request(entity(message))


def test_securejoin_with_two_parts_is_refused():
    raw = testmail.to_bytes(testmail.make_securejoin_request(SENDER, RECIPIENT))
    boundary = parse_entity(raw).param("boundary").encode()
    close = b"--" + boundary + b"--"
    extra = b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nspam\r\n" + close
    assert not is_securejoin_request(parse_entity(raw.replace(close, extra)))


def test_securejoin_html_part_is_refused():
    raw = testmail.to_bytes(testmail.make_securejoin_request(SENDER, RECIPIENT))
    assert not is_securejoin_request(parse_entity(raw.replace(b"Content-Type: text/plain", b"Content-Type: text/html")))


def test_autocrypt_setup_message():
    assert is_autocrypt_setup_message(entity(testmail.make_autocrypt_setup_message(SENDER)))
    encoded_subject = testmail.to_bytes(testmail.make_autocrypt_setup_message(SENDER)).replace(
        b"Subject: Autocrypt Setup Message", b"Subject: =?utf-8?q?Autocrypt_Setup_Message?="
    )
    assert is_autocrypt_setup_message(parse_entity(encoded_subject))
    assert not is_autocrypt_setup_message(entity(testmail.make_plain_message(SENDER, SENDER, subject="Autocrypt Setup Message")))
    # as filtermail's milter sees it after Postfix's submission cleanup: Subject "[...]"
    rewritten = testmail.to_bytes(testmail.make_autocrypt_setup_message(SENDER)).replace(
        b"Subject: Autocrypt Setup Message", b"Subject: [...]")
    assert is_autocrypt_setup_message(parse_entity(rewritten))
    assert not is_autocrypt_setup_message(parse_entity(rewritten.replace(b"Autocrypt-Setup-Message: v1", b"X-A: v1")))


def test_mailer_daemon_report():
    assert is_mailer_daemon_report(entity(testmail.make_mailer_daemon_report("MAILER-DAEMON@example.org", SENDER)))
    raw = testmail.to_bytes(testmail.make_mailer_daemon_report("MAILER-DAEMON@example.org", SENDER))
    assert not is_mailer_daemon_report(parse_entity(raw.replace(b"Auto-Submitted: auto-replied\r\n", b"")))
    assert not is_mailer_daemon_report(entity(testmail.make_mailer_daemon_report("someone@example.org", SENDER)))


def test_mdn_is_not_an_exception():
    """Upstream: unencrypted read receipts must not pass."""
    mdn = entity(testmail.make_mdn(SENDER, RECIPIENT))
    assert not is_encrypted(mdn, True)
    assert not is_securejoin_request(mdn)
    assert not is_mailer_daemon_report(mdn)


def test_from_address():
    assert from_address(parse_entity(b"From: Some One <a@b.org>\r\n\r\n")) == "a@b.org"
    assert from_address(parse_entity(b"From: =?utf-8?q?S=C3=B6me?=\r\n <a@b.org>\r\n\r\n")) == "a@b.org"
    assert from_address(parse_entity(b"Subject: x\r\n\r\n")) is None
    assert from_address(parse_entity(b"From: \r\n\r\n")) is None


def test_oversized_fields_are_treated_as_absent():
    """The stdlib parsers are slow on crafted huge fields; such fields are ignored, quickly."""
    raw = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT))
    many_params = raw.replace(b'protocol="', b'a="b"; ' * 3000 + b'protocol="', 1)
    assert not is_encrypted(parse_entity(many_params), False)
    long_from = raw.replace(b"From: <", b"From: " + b'"x" <x@y>, ' * 2000 + b"<", 1)
    assert from_address(parse_entity(long_from)) is None
    assert from_address(parse_entity(raw)) == SENDER


# --- robustness: no input makes the checks raise (other than MalformedMessage)

VALID_MESSAGE = testmail.to_bytes(testmail.make_encrypted_message(SENDER, RECIPIENT, payload_size=300))


def run_all_checks(raw: bytes) -> None:
    try:
        message = parse_entity(raw)
    except MalformedMessage:
        return
    for allow_armor_headers in (False, True):
        assert is_encrypted(message, allow_armor_headers) in (True, False)
    assert is_securejoin_request(message) in (True, False)
    assert is_autocrypt_setup_message(message) in (True, False)
    assert is_mailer_daemon_report(message) in (True, False)
    from_address(message)


@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(raw: bytes):
    run_all_checks(raw)
    assert is_encrypted_packet_sequence(raw) in (True, False)
    assert is_armored_openpgp_message(raw, True) in (True, False)


@given(st.integers(0, len(VALID_MESSAGE) - 1), st.binary(min_size=0, max_size=8), st.integers(0, 8))
def test_mutated_messages_never_raise(position: int, inserted: bytes, deleted: int):
    run_all_checks(VALID_MESSAGE[:position] + inserted + VALID_MESSAGE[position + deleted :])


@given(st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_packet_bytes(position: int, value: int):
    packets = make_openpgp_payload(100)
    header_positions = {0, 1, 85, 86}  # PKESK tag and length, SEIPD tag and length
    assert packets[85] == 0xC0 | 18
    position %= len(packets)
    corrupted = packets[:position] + bytes([value]) + packets[position + 1 :]
    if position not in header_positions or corrupted == packets:
        assert is_encrypted_packet_sequence(corrupted)  # only headers are looked at
    else:
        assert is_encrypted_packet_sequence(corrupted) in (True, False)
