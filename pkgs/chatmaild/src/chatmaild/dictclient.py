"""A minimal blocking dict-protocol client, speaking like Dovecot's auth process (tests, bench)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .dictproto import passdb_key, request_line, userdb_key


class DictClient:
    def __init__(self, socket_path: str | Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(socket_path))
        self.file = self.sock.makefile("rwb")
        self.send(request_line("H", "3", "2", "0", "", "auth"))

    def send(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def readline(self) -> bytes:
        """One reply line including its newline; b"" once the server has closed the connection."""
        return self.file.readline()

    def request(self, data: bytes) -> bytes:
        self.send(data)
        return self.readline()

    def lookup(self, key: str, user: str) -> bytes:
        return self.request(request_line("L", key, user))

    def passdb(self, user: str, password: str) -> dict[str, Any] | None:
        """The passdb fields for ``user`` (None for "not found"); raises on a failure reply."""
        return _fields(self.lookup(passdb_key(user, password), user))

    def userdb(self, user: str) -> dict[str, Any] | None:
        return _fields(self.lookup(userdb_key(user), user))

    def iterate_users(self) -> list[str]:
        self.send(request_line("I", "0", "0", "shared/userdb/", "*"))
        users = []
        while (line := self.readline()) not in (b"\n", b""):
            key, _, _ = line[1:].rstrip(b"\n").partition(b"\t")
            users.append(key.decode().removeprefix("shared/userdb/"))
        return users

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> DictClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fields(reply: bytes) -> dict[str, Any] | None:
    if reply.startswith(b"O"):
        return json.loads(reply[1:])
    if reply == b"N\n":
        return None
    raise RuntimeError(f"dict lookup failed: {reply!r}")
