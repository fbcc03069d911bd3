"""The TURN client's message codec (tests/harness/turn_client.py), against RFC 5769's test vectors
and by round trips."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turn_client as tc  # noqa: E402

# RFC 5769 section 2.2: a Binding success response (IPv4), short-term password
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b"
    "7465737420766563746f7220002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"


def test_rfc5769_response_decodes_and_verifies() -> None:
    message = tc.decode(RFC5769_RESPONSE)
    assert (message.method, message.cls) == (0x001, tc.SUCCESS)
    address = message.get(tc.XOR_MAPPED_ADDRESS)
    assert tc.parse_xor_address(address, message.transaction) == ("192.0.2.1", 32853)
    assert tc.integrity_ok(RFC5769_RESPONSE, RFC5769_PASSWORD)
    assert not tc.integrity_ok(RFC5769_RESPONSE, b"another password")
    assert tc.fingerprint_ok(RFC5769_RESPONSE)
    assert not tc.fingerprint_ok(RFC5769_RESPONSE[:-1] + b"\x00")


def test_message_type_interleaves_method_and_class() -> None:
    assert tc.message_type(tc.ALLOCATE, tc.REQUEST) == 0x0003
    assert tc.message_type(tc.ALLOCATE, tc.SUCCESS) == 0x0103
    assert tc.message_type(tc.ALLOCATE, tc.ERROR) == 0x0113
    assert tc.message_type(tc.SEND, tc.INDICATION) == 0x0016
    for method in (tc.ALLOCATE, tc.CREATE_PERMISSION, tc.SEND, tc.DATA, 0xFFF):
        for cls in (tc.REQUEST, tc.INDICATION, tc.SUCCESS, tc.ERROR):
            assert tc.split_type(tc.message_type(method, cls)) == (method, cls)


def test_encode_round_trip_with_integrity_and_fingerprint() -> None:
    key = tc.long_term_key("1700432000", "chat.test", "secret")
    message = tc.Message(tc.ALLOCATE, tc.REQUEST, bytes(range(12)),
                         [(tc.USERNAME, b"1700432000"), (tc.REALM, b"chat.test")])
    data = tc.encode(message, key, fingerprint=True)
    assert tc.integrity_ok(data, key) and tc.fingerprint_ok(data)
    decoded = tc.decode(data)
    assert decoded.get(tc.USERNAME) == b"1700432000" and decoded.get(tc.REALM) == b"chat.test"
    assert tc.stun_length(data[:20]) == len(data)


@pytest.mark.parametrize("host", ["198.18.0.2", "2001:db8::1"])
def test_xor_address_round_trip(host: str) -> None:
    transaction = bytes(range(12))
    assert tc.parse_xor_address(tc.xor_address(host, 3478, transaction), transaction) == (host, 3478)


def test_error_code_and_outcome() -> None:
    error = tc.Message(tc.ALLOCATE, tc.ERROR, bytes(12), [(tc.ERROR_CODE, b"\0\0\x04\x01Unauthorized")])
    assert tc.error_code(error) == (401, "Unauthorized")
    assert tc.outcome(error) == {"status": 401, "reason": "Unauthorized"}


@pytest.mark.parametrize("data", [b"", b"\x00" * 19, bytes.fromhex("0001000021120000") + bytes(12),
                                  RFC5769_RESPONSE[:-4]])
def test_decode_refuses_non_stun(data: bytes) -> None:
    with pytest.raises(tc.StunError):
        tc.decode(data)
