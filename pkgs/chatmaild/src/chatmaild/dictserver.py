"""The server side of Dovecot's dict protocol on a unix socket, shared by doveauth and
chatmail-metadata.

A daemon supplies a session per connection: ``handle_line(raw)`` gets one request line (without
its newline) and returns the reply bytes, None for requests without a reply, or a coroutine for
requests that must wait (its result is the reply). It raises CloseConnection when the client
broke the protocol so badly that the connection must end. Everything else is here: line framing
and its length limit, replies strictly in request order, back-pressure, ending a connection
without a reset, and the socket's life (a stale socket of an earlier run, the socket's mode,
stopping on SIGTERM or SIGINT).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from .dictproto import FAIL_REPLY, MAX_LINE_LENGTH

log = logging.getLogger(__name__)

# Owner and group may read and write, nobody else: both sockets belong to the mailbox user, and
# the group bit lets a deployment admit another user through a group.
SOCKET_MODE = 0o660

Reply = bytes | None | Coroutine[Any, Any, bytes]


class CloseConnection(Exception):
    """The client broke the protocol in a way that leaves no sensible reply."""


class Session(Protocol):
    def handle_line(self, raw: bytes) -> Reply: ...


class DictConnection(asyncio.Protocol):
    """One client connection. Replies go out strictly in request order: while a request waits,
    reading pauses and the requests behind it stay buffered.

    A Protocol rather than streams: requests answered at once are handled synchronously in
    data_received, without a coroutine per request (about half the CPU per doveauth lookup).

    Ending a connection on a protocol error is a half-close: the replies so far (and ``F`` for a
    line over the length limit) go out, then the write side is shut down and input is read and
    dropped until the client closes its side. Closing at once with unread input would make the
    kernel reset the connection, and the client (Dovecot's dict client) could lose the replies
    already sent to a "connection reset" instead of reading them and a clean end of file.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[bytes] | None = None
        self.reading_paused_by: set[str] = set()  # "waiting" and/or "writing"
        self.eof = False
        self.ending = False  # write side shut down; input is dropped until the client's EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.ending:
            return
        self.buffer += data
        self._process()

    def eof_received(self) -> bool:
        self.eof = True
        if self.ending:
            return False  # closes the connection: nothing unread is left
        if self.waiting is None:
            self._process()
            return False  # closes the connection
        return True  # keep it open until the waiting request is answered

    def pause_writing(self) -> None:
        self._pause_reading("writing")

    def resume_writing(self) -> None:
        self._resume_reading("writing")

    def _pause_reading(self, reason: str) -> None:
        if not self.reading_paused_by and self.transport is not None:
            self.transport.pause_reading()
        self.reading_paused_by.add(reason)

    def _resume_reading(self, reason: str) -> None:
        self.reading_paused_by.discard(reason)
        if not self.reading_paused_by and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _end(self, replies: list[bytes]) -> None:
        """Send REPLIES, shut down the write side and drop all further input (see the class)."""
        self._write(replies)
        self.ending = True
        self.buffer.clear()
        if self.transport is None:
            return
        if self.eof:
            self.transport.close()  # the client has sent everything already: nothing unread
            return
        self.transport.write_eof()  # after the buffered replies
        self.reading_paused_by.clear()
        self.transport.resume_reading()

    def _process(self) -> None:
        """Answer the complete lines in the buffer, until one of them has to wait."""
        replies: list[bytes] = []
        start = 0
        try:
            while self.waiting is None and self.transport is not None:
                end = self.buffer.find(b"\n", start)
                if (end if end >= 0 else len(self.buffer)) - start > MAX_LINE_LENGTH:
                    # the line is a request too: it is answered, in order, before the end
                    replies.append(FAIL_REPLY)
                    raise CloseConnection(f"request line longer than {MAX_LINE_LENGTH} bytes")
                if end < 0:
                    break
                line = bytes(self.buffer[start:end])
                start = end + 1
                try:
                    reply = self.session.handle_line(line)
                except CloseConnection:
                    raise
                except Exception:
                    log.exception("failed to handle %r", line[:200])
                    reply = FAIL_REPLY
                if isinstance(reply, bytes):
                    replies.append(reply)
                elif reply is not None:
                    self.waiting = asyncio.ensure_future(reply)
                    self.waiting.add_done_callback(self._answer_waiting)
                    self._pause_reading("waiting")
        except CloseConnection as e:
            log.warning("closing connection: %s", e)
            self._end(replies)
            return
        finally:
            del self.buffer[:start]
        self._write(replies)
        if self.eof and self.waiting is None and self.transport is not None:
            self.transport.close()

    def _write(self, replies: list[bytes]) -> None:
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def _answer_waiting(self, done: asyncio.Future[bytes]) -> None:
        self.waiting = None
        if done.cancelled():
            return
        try:
            reply = done.result()
        except Exception:
            log.exception("request failed")
            reply = FAIL_REPLY
        self._write([reply])
        self._resume_reading("waiting")
        self._process()


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by an earlier run; refuse to remove anything that is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not removing it")
    path.unlink()


async def serve_until_stopped(
    socket_path: Path, new_session: Callable[[], Session], description: str
) -> None:
    """Serve dict connections on ``socket_path`` (mode SOCKET_MODE) until SIGTERM or SIGINT;
    the socket is removed on the way out. Raises OSError if it cannot listen. ``description``
    goes into the log line that says it listens."""
    remove_stale_socket(socket_path)
    loop = asyncio.get_running_loop()
    old_umask = os.umask(0o777 & ~SOCKET_MODE)  # no window in which the socket is wider open
    try:
        server = await loop.create_unix_server(
            lambda: DictConnection(new_session()), path=os.fspath(socket_path), backlog=1024
        )
    except OSError as e:
        # (a path over the unix socket limit is an OSError without errno or strerror)
        raise OSError(e.errno, f"cannot listen on {socket_path}: {e.strerror or e}") from e
    finally:
        os.umask(old_umask)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("listening on %s: %s", socket_path, description)
    try:
        await stopping.wait()
        log.info("stopping")
    finally:
        server.close()
        socket_path.unlink(missing_ok=True)
