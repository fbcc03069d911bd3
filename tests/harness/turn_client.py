#!/usr/bin/env python3
"""A minimal TURN client (RFC 8656 over UDP or TCP, long-term credentials, RFC 8489 STUN), stdlib
only: allocate a relayed address, permit a peer, send through the relay and receive the answer.

    turn_client.py allocate --server HOST [--port 3478] [--tcp] --username U --password P
                            [--peer IP:PORT] [--forbidden-peer IP:PORT]

prints one JSON object: {"allocate": {"status": 200|4xx, "reason": ..., "relayed": [ip, port]},
"peer": {...}, "forbidden_peer": {...}}. With --peer, a UDP socket bound at IP:PORT (on this
host) receives a datagram sent through the relay and answers it; the answer must come back as a
Data indication. The message codec is pure (tests/harness/test_turn_client_rules.py).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import struct
import sys
import zlib
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
TIMEOUT = 5.0

# methods and classes (RFC 8489 section 5)
ALLOCATE, CREATE_PERMISSION, SEND, DATA = 0x003, 0x008, 0x006, 0x007
REQUEST, INDICATION, SUCCESS, ERROR = 0x000, 0x010, 0x100, 0x110

# attributes
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
XOR_PEER_ADDRESS, DATA_ATTR, REALM, NONCE = 0x0012, 0x0013, 0x0014, 0x0015
XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT, XOR_MAPPED_ADDRESS = 0x0016, 0x0019, 0x0020
FINGERPRINT = 0x8028
UDP_TRANSPORT = bytes([17, 0, 0, 0])


class StunError(ValueError):
    """Bytes that are not a STUN message."""


@dataclass
class Message:
    method: int
    cls: int
    transaction: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, kind: int) -> bytes | None:
        return next((value for attr, value in self.attributes if attr == kind), None)


# --- pure codec


def message_type(method: int, cls: int) -> int:
    """The 14-bit type: method bits interleaved with the two class bits (C1 at bit 8, C0 at 4)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def split_type(value: int) -> tuple[int, int]:
    cls = value & 0x0110
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    return method, cls


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def long_term_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def encode(message: Message, key: bytes | None = None, fingerprint: bool = False) -> bytes:
    """The message's bytes, with MESSAGE-INTEGRITY (HMAC-SHA1 with ``key``) and FINGERPRINT
    appended when asked for; each covers the message before it with the length field counting
    through itself."""
    body = b"".join(_attribute(kind, value) for kind, value in message.attributes)
    kind = message_type(message.method, message.cls)

    def header(length: int) -> bytes:
        return HEADER.pack(kind, length, MAGIC_COOKIE, message.transaction)

    if key is not None:
        mac = hmac.new(key, header(len(body) + 24) + body, hashlib.sha1).digest()
        body += _attribute(MESSAGE_INTEGRITY, mac)
    if fingerprint:
        crc = (zlib.crc32(header(len(body) + 8) + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += _attribute(FINGERPRINT, struct.pack("!I", crc))
    return header(len(body)) + body


def _covered(data: bytes, kind: int, size: int) -> tuple[bytes, bytes] | None:
    """(what the attribute ``kind`` covers, its value): the message before it, with the
    length field counting through it; None if the message has no such attribute."""
    offset, end = HEADER.size, HEADER.size + HEADER.unpack_from(data)[1]
    while offset + 4 <= end:
        attr, length = struct.unpack_from("!HH", data, offset)
        if attr == kind and length == size:
            covered = bytearray(data[:offset])
            struct.pack_into("!H", covered, 2, offset + 4 + size - HEADER.size)
            return bytes(covered), data[offset + 4 : offset + 4 + size]
        offset += 4 + length + (-length % 4)
    return None


def integrity_ok(data: bytes, key: bytes) -> bool:
    """Whether the message carries a MESSAGE-INTEGRITY made with ``key``."""
    found = _covered(data, MESSAGE_INTEGRITY, 20)
    return found is not None and hmac.compare_digest(
        hmac.new(key, found[0], hashlib.sha1).digest(), found[1])


def fingerprint_ok(data: bytes) -> bool:
    found = _covered(data, FINGERPRINT, 4)
    return found is not None and struct.pack("!I", (zlib.crc32(found[0]) ^ 0x5354554E) & 0xFFFFFFFF) == found[1]


def decode(data: bytes) -> Message:
    if len(data) < HEADER.size:
        raise StunError("shorter than a STUN header")
    kind, length, cookie, transaction = HEADER.unpack_from(data)
    if kind & 0xC000 or cookie != MAGIC_COOKIE or length % 4 or len(data) < HEADER.size + length:
        raise StunError("not a STUN message")
    method, cls = split_type(kind)
    attributes = []
    offset, end = HEADER.size, HEADER.size + length
    while offset < end:
        if offset + 4 > end:
            raise StunError("attribute header runs past the message")
        attr, size = struct.unpack_from("!HH", data, offset)
        if offset + 4 + size > end:
            raise StunError("attribute runs past the message")
        attributes.append((attr, data[offset + 4 : offset + 4 + size]))
        offset += 4 + size + (-size % 4)
    return Message(method, cls, transaction, attributes)


def stun_length(header: bytes) -> int:
    """The whole message's length from its 20-byte header (framing over TCP)."""
    return HEADER.size + HEADER.unpack(header)[1]


def xor_address(host: str, port: int, transaction: bytes) -> bytes:
    address = ipaddress.ip_address(host)
    mask = struct.pack("!I", MAGIC_COOKIE) + (transaction if address.version == 6 else b"")
    raw = bytes(a ^ b for a, b in zip(address.packed, mask))
    family = 0x01 if address.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + raw


def parse_xor_address(value: bytes, transaction: bytes) -> tuple[str, int]:
    _, family, xport = struct.unpack_from("!BBH", value)
    mask = struct.pack("!I", MAGIC_COOKIE) + (transaction if family == 0x02 else b"")
    raw = bytes(a ^ b for a, b in zip(value[4:], mask))
    return str(ipaddress.ip_address(raw)), xport ^ (MAGIC_COOKIE >> 16)


def error_code(message: Message) -> tuple[int, str] | None:
    value = message.get(ERROR_CODE)
    if value is None:
        return None
    return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")


def outcome(message: Message) -> dict:
    """{"status": 200 or the error code, "reason": text} of a response."""
    if message.cls == SUCCESS:
        return {"status": 200, "reason": "success"}
    code = error_code(message)
    return {"status": code[0], "reason": code[1]} if code else {"status": 0, "reason": "no ERROR-CODE"}


# --- the client (edges: sockets)


class Connection:
    def __init__(self, server: tuple[str, int], tcp: bool) -> None:
        self.tcp = tcp
        self.last = b""
        self.sock = socket.create_connection(server, TIMEOUT) if tcp else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(TIMEOUT)
        if not tcp:
            self.sock.connect(server)

    def send(self, data: bytes) -> None:
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.send(data)

    def receive(self) -> Message:
        """The next message; its bytes stay in ``last``."""
        if self.tcp:
            header = self._read(HEADER.size)
            self.last = header + self._read(stun_length(header) - HEADER.size)
        else:
            self.last = self.sock.recv(65536)
        return decode(self.last)

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the TURN server closed the connection")
            data += chunk
        return data

    def request(self, message: Message, key: bytes | None = None) -> Message:
        self.send(encode(message, key, fingerprint=True))
        while True:  # indications may arrive in between
            reply = self.receive()
            if reply.transaction == message.transaction:
                return reply


class TurnSession:
    def __init__(self, connection: Connection, username: str, password: str) -> None:
        self.connection = connection
        self.username = username
        self.password = password
        self.key: bytes | None = None
        self.realm = self.nonce = b""

    def _authenticated(self, method: int, attributes: list[tuple[int, bytes]]) -> Message:
        auth = [(USERNAME, self.username.encode()), (REALM, self.realm), (NONCE, self.nonce)]
        return Message(method, REQUEST, os.urandom(12), attributes + auth)

    def allocate(self) -> dict:
        attributes = [(REQUESTED_TRANSPORT, UDP_TRANSPORT), (LIFETIME, struct.pack("!I", 600))]
        challenge = self.connection.request(Message(ALLOCATE, REQUEST, os.urandom(12), attributes))
        if error_code(challenge) is None or challenge.get(NONCE) is None:
            return {"step": "challenge", **outcome(challenge)}
        self.realm, self.nonce = challenge.get(REALM) or b"", challenge.get(NONCE) or b""
        self.key = long_term_key(self.username, self.realm.decode(), self.password)
        request = self._authenticated(ALLOCATE, attributes)
        reply = self.connection.request(request, self.key)
        result = {"step": "allocate", "realm": self.realm.decode(), **outcome(reply),
                  "integrity": integrity_ok(self.connection.last, self.key)}
        relayed = reply.get(XOR_RELAYED_ADDRESS)
        if relayed is not None:
            result["relayed"] = list(parse_xor_address(relayed, reply.transaction))
        return result

    def permit(self, peer: tuple[str, int]) -> dict:
        request = self._authenticated(CREATE_PERMISSION, [])
        request.attributes.insert(0, (XOR_PEER_ADDRESS, xor_address(*peer, request.transaction)))
        return outcome(self.connection.request(request, self.key))

    def send_to(self, peer: tuple[str, int], data: bytes) -> None:
        transaction = os.urandom(12)
        self.connection.send(encode(Message(SEND, INDICATION, transaction, [
            (XOR_PEER_ADDRESS, xor_address(*peer, transaction)), (DATA_ATTR, data)])))

    def receive_data(self) -> tuple[tuple[str, int], bytes]:
        while True:
            message = self.connection.receive()
            if (message.method, message.cls) == (DATA, INDICATION):
                peer = parse_xor_address(message.get(XOR_PEER_ADDRESS) or b"", message.transaction)
                return peer, message.get(DATA_ATTR) or b""


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def relay_round_trip(session: TurnSession, peer_address: tuple[str, int]) -> dict:
    """Permit the peer, send a datagram through the relay, let the peer answer its sender."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(peer_address)
        peer.settimeout(TIMEOUT)
        result = {"permission": session.permit(peer.getsockname())}
        if result["permission"]["status"] != 200:
            return result
        session.send_to(peer.getsockname(), b"ping through the relay")
        data, source = peer.recvfrom(2048)
        result["peer_received"] = data.decode()
        result["peer_saw_source"] = list(source)
        peer.sendto(b"pong from the peer", source)
        from_peer, answer = session.receive_data()
        result["client_received"] = answer.decode()
        result["client_saw_peer"] = list(from_peer)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["allocate"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--tcp", action="store_true", help="talk to the TURN server over TCP")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--peer", type=parse_host_port, help="local IP:PORT to relay a datagram to")
    parser.add_argument("--forbidden-peer", type=parse_host_port, help="IP:PORT the server must refuse")
    args = parser.parse_args(argv)
    connection = Connection((args.server, args.port), args.tcp)
    session = TurnSession(connection, args.username, args.password)
    report: dict = {"allocate": session.allocate()}
    if report["allocate"]["status"] == 200:
        if args.forbidden_peer:
            report["forbidden_peer"] = session.permit(args.forbidden_peer)
        if args.peer:
            report["peer"] = relay_round_trip(session, args.peer)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
