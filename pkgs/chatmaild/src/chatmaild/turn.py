"""TURN credentials for calls: time-limited REST-API credentials from a shared secret.

The relay's TURN server (coturn with ``use-auth-secret`` and ``static-auth-secret``) accepts a
username that is a Unix time in the future and, as password, the base64 of HMAC-SHA1 over that
username keyed with the shared secret (draft-uberti-behave-turn-rest, as upstream's chatmail-turn
hands out). Delta Chat asks for them with ``GETMETADATA "" /shared/vendor/deltachat/turn`` and
gets ``<host>:3478:<username>:<password>``.

Two halves, so that the secret stays out of chatmail-metadata (which runs as the mailbox owner):

- ``chatmail-turn-credentials SOCKET --secret-file FILE`` answers each connection to the unix
  socket ``SOCKET`` (chatmail.ini's ``turn_socket_path``) with one line ``username:password``
  and closes it — the protocol of upstream's chatmail-turn;
- chatmail-metadata connects to that socket for each lookup (:func:`fetch_credentials`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import logging
import os
import signal
import sys
import time
from pathlib import Path

from .cliargs import positive_int
from .dictserver import remove_stale_socket

log = logging.getLogger(__name__)

TURN_PORT = 3478  # upstream's metadata always names this port
# upstream's chatmail-turn hands out credentials valid for five days
DEFAULT_LIFETIME = 5 * 24 * 3600
FETCH_TIMEOUT = 5.0  # seconds chatmail-metadata waits for an answer on the socket
MIN_SECRET_LENGTH = 16
SOCKET_MODE = 0o660  # chatmail-metadata reaches it as the socket's owner or group


class SecretError(ValueError):
    """The shared secret file is missing, unreadable or too short."""


# --- rules (pure)


def rest_credentials(secret: str, now: float, lifetime: int = DEFAULT_LIFETIME) -> tuple[str, str]:
    """(username, password) valid until ``now + lifetime`` for a TURN server with ``secret``.

    The username is the expiry as a Unix time, with no user id after it: a ``:`` in it would
    break the colon-separated metadata value.
    """
    username = str(int(now) + lifetime)
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def metadata_value(host: str, credentials_line: str) -> str | None:
    """The ``turn`` metadata value for ``credentials_line`` (``username:password`` as the
    socket answers it); None if that line is not one."""
    username, colon, password = credentials_line.strip().partition(":")
    if not colon or not username or not password or any(c.isspace() for c in credentials_line.strip()):
        return None
    return f"{host}:{TURN_PORT}:{username}:{password}"


def parse_secret(text: str) -> str:
    """The secret in a secret file: its first line, without surrounding white space."""
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if len(secret) < MIN_SECRET_LENGTH:
        raise SecretError(f"the TURN secret must be at least {MIN_SECRET_LENGTH} characters on its first line")
    return secret


def read_secret(path: Path) -> str:
    try:
        return parse_secret(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"cannot read the TURN secret from {path}: {e}") from None
    except SecretError as e:
        raise SecretError(f"{path}: {e}") from None


# --- chatmail-metadata's side


async def fetch_credentials(socket_path: Path, timeout: float = FETCH_TIMEOUT) -> str:
    """One ``username:password`` line from the credentials socket; raises OSError or
    TimeoutError when there is none."""

    async def read() -> str:
        reader, writer = await asyncio.open_unix_connection(os.fspath(socket_path))
        try:
            line = await reader.readline()
        finally:
            writer.close()
        if not line.endswith(b"\n"):
            raise OSError(f"truncated answer from {socket_path}")
        return line.decode("ascii", "replace").strip()

    return await asyncio.wait_for(read(), timeout)


# --- the daemon


async def serve(socket_path: Path, secret: str, lifetime: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        username, password = rest_credentials(secret, time.time(), lifetime)
        try:
            writer.write(f"{username}:{password}\n".encode())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    remove_stale_socket(socket_path)
    old_umask = os.umask(0o777 & ~SOCKET_MODE)
    try:
        server = await asyncio.start_unix_server(answer, path=os.fspath(socket_path))
    finally:
        os.umask(old_umask)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("handing out TURN credentials (valid %d s) on %s", lifetime, socket_path)
    try:
        await stopping.wait()
    finally:
        server.close()
        socket_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Hand out TURN REST-API credentials on a unix socket, one line per connection."""
    parser = argparse.ArgumentParser(prog="chatmail-turn-credentials", description=main.__doc__)
    parser.add_argument("socket", type=Path, help="unix socket to listen on (chatmail.ini's turn_socket_path)")
    parser.add_argument("--secret-file", type=Path, required=True,
                        help="file whose first line is the TURN server's static-auth-secret")
    parser.add_argument("--lifetime", type=positive_int, default=DEFAULT_LIFETIME,
                        help=f"seconds the credentials stay valid (default {DEFAULT_LIFETIME})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        secret = read_secret(args.secret_file)
        asyncio.run(serve(args.socket, secret, args.lifetime))
    except (SecretError, OSError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
