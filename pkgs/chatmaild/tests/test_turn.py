"""TURN credentials: the REST-API rule, the secret file, chatmail-turn-credentials over its socket,
and chatmail-metadata's ``turn`` lookup through it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmaild import dictproto
from chatmaild.config import Config
from chatmaild.metadata import TURN_KEY, DictSession, MetadataDict, TokenStore
from chatmaild.turn import (
    DEFAULT_LIFETIME,
    SecretError,
    fetch_credentials,
    metadata_value,
    parse_secret,
    rest_credentials,
)

SECRET = "north-pole-secret-123"
GUID = "5cbe730f146fea6535be0d003dd4fc98"


def test_rest_credentials_match_an_independent_hmac() -> None:
    # printf 1700432000 | openssl dgst -sha1 -hmac north-pole-secret-123 -binary | base64
    assert rest_credentials(SECRET, 1700000000, 432000) == ("1700432000", "F0JneYeEinaic2eg8aqjeL8gTg4=")


def test_rest_credentials_expire_after_the_lifetime_and_depend_on_the_secret() -> None:
    username, password = rest_credentials(SECRET, 1000.9)
    assert username == str(1000 + DEFAULT_LIFETIME) and ":" not in username
    assert rest_credentials("another-secret-value", 1000.9)[1] != password


def test_metadata_value_is_upstreams_format() -> None:
    assert metadata_value("chat.example.org", "1700432000:F0Jn/+=\n") == "chat.example.org:3478:1700432000:F0Jn/+="
    for bad in ("", "\n", "nocolon", ":pass", "user:", "user:pa ss"):
        assert metadata_value("chat.example.org", bad) is None, bad


def test_parse_secret_takes_the_first_line_and_refuses_short_ones() -> None:
    assert parse_secret(f"  {SECRET}  \nsecond line\n") == SECRET
    for bad in ("", "\n" + SECRET, "short"):
        with pytest.raises(SecretError):
            parse_secret(bad)


# --- the daemon over its socket


@pytest.fixture
def credentials_socket(tmp_path: Path) -> Iterator[Path]:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    socket_path = tmp_path / "turn.socket"
    process = subprocess.Popen(
        [sys.executable, "-m", "chatmaild.turn", str(socket_path), "--secret-file", str(secret_file),
         "--lifetime", "600"],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 10
    while True:  # the socket file appears at bind(), a moment before listen()
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(os.fspath(socket_path))
            break
        except OSError:
            assert time.monotonic() < deadline, "chatmail-turn-credentials did not listen"
            time.sleep(0.02)
    yield socket_path
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert not socket_path.exists()


def test_daemon_answers_one_line_per_connection(credentials_socket: Path) -> None:
    assert credentials_socket.stat().st_mode & 0o777 == 0o660
    before = time.time()
    line = asyncio.run(fetch_credentials(credentials_socket))
    username, password = line.split(":")
    assert int(before) + 600 <= int(username) <= time.time() + 600
    assert rest_credentials(SECRET, int(username) - 600, 600) == (username, password)


def test_daemon_refuses_a_missing_or_short_secret(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("abc\n")
    for secret_file in (tmp_path / "missing", tmp_path / "short"):
        result = subprocess.run(
            [sys.executable, "-m", "chatmaild.turn", str(tmp_path / "s"), "--secret-file", str(secret_file)],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 1 and "TURN secret" in result.stderr, result.stderr


# --- chatmail-metadata's lookup


def lookup_turn(config: Config, socket_path: Path | None) -> bytes:
    handler = MetadataDict(TokenStore(config), None, "", config.mail_domain, socket_path)  # type: ignore[arg-type]
    reply = DictSession(handler).handle(f"Lshared/{GUID}/{TURN_KEY}")
    assert asyncio.iscoroutine(reply), "the lookup must not block the event loop"
    return asyncio.run(reply)


def test_metadata_turn_lookup(example_config: Config, credentials_socket: Path) -> None:
    reply = lookup_turn(example_config, credentials_socket)
    host, port, username, password = dictproto.parse_request(reply.decode()[:-1]).args[0].split(":")
    assert reply.startswith(b"O") and (host, port) == ("chat.example.org", "3478")
    assert rest_credentials(SECRET, int(username) - 600, 600)[1] == password


def test_metadata_turn_lookup_without_a_credentials_daemon_is_not_found(
    example_config: Config, tmp_path: Path
) -> None:
    assert lookup_turn(example_config, tmp_path / "nobody-listens.socket") == dictproto.NOT_FOUND_REPLY


def test_turn_socket_path_default_is_upstreams(example_config: Config, make_config) -> None:
    assert example_config.turn_socket_path == Path("/run/chatmail-turn/turn.socket")
    assert make_config(turn_socket_path="/tmp/t.socket").turn_socket_path == Path("/tmp/t.socket")
    assert os.fspath(example_config.turn_socket_path).startswith("/")
