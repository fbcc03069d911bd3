"""Push notifications: tell the notification service that a device has new mail.

For each device token of a mailbox that receives a message, one notification (the opaque,
client-encrypted token as the body of an HTTP POST) goes to the notification service, which wakes
the device. Pending notifications live as files in a queue directory (upstream's format: three
lines ``addr``, ``start timestamp``, ``token``), so they survive a restart. A failed POST is retried
with exponential back-off until DROP_DEADLINE after the first attempt; HTTP 410 means the token is
gone for good and it is removed from the mailbox.

Only one notification per (mailbox, token) waits at a time: it wakes the device, which then fetches
every new message, so further ones queued behind it would only repeat it.
"""

from __future__ import annotations

import asyncio
import enum
import http.client
import logging
import queue
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .filestore import TMP_SUFFIX, write_atomic

log = logging.getLogger(__name__)

DEFAULT_NOTIFY_URL = "https://notifications.delta.chat/notify"
QUEUE_DIR_NAME = "pending_notifications"
REQUEST_TIMEOUT = 60.0  # seconds until one HTTP request is given up
# retry n (n >= 1) waits RETRY_BASE_DELAY * RETRY_FACTOR**(n-1) seconds: 8 s, 64 s, 512 s, 4096 s
RETRY_BASE_DELAY = 8.0
RETRY_FACTOR = 8
DROP_DEADLINE = 5 * 3600  # give a notification up this many seconds after its first attempt
DEFAULT_WORKERS = 8  # concurrent HTTP requests

RemoveToken = Callable[[str, str], None]


# --- rules (pure)


def retry_delay(attempt: int, base_delay: float) -> float:
    """Seconds from the failure of attempt ``attempt - 1`` to attempt ``attempt`` (0: first)."""
    return 0.0 if attempt == 0 else base_delay * RETRY_FACTOR ** (attempt - 1)


def attempt_time(start_ts: float, attempt: int, now: float, base_delay: float) -> float | None:
    """When to make attempt ``attempt`` of a notification first tried at ``start_ts``.

    None means never: it would fall after the deadline, so the notification is dropped.
    """
    when = now + retry_delay(attempt, base_delay)
    return None if when > start_ts + DROP_DEADLINE else when


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    TOKEN_GONE = "token gone"  # the device unregistered: forget the token
    RETRY = "retry"


def outcome_of(status: int | None) -> Outcome:
    """What an HTTP status (None: no response at all) means for a notification."""
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.TOKEN_GONE
    return Outcome.RETRY


# --- the durable queue


@dataclass(frozen=True)
class Notification:
    addr: str
    token: str
    start_ts: int  # time of the first attempt (unix seconds)
    path: Path  # its queue file

    @property
    def key(self) -> tuple[str, str]:
        return (self.addr, self.token)


def serialize(addr: str, start_ts: int, token: str) -> bytes:
    return f"{addr}\n{start_ts}\n{token}".encode()


def parse(path: Path, content: bytes) -> Notification:
    """Read a queue file; raises ValueError for anything malformed."""
    addr, start_ts, token = content.decode().split("\n", 2)
    if not addr or not token:
        raise ValueError("empty address or token")
    return Notification(addr=addr, token=token, start_ts=int(start_ts), path=path)


class NotificationQueue:
    """Pending notifications, one file each in ``queue_dir``."""

    def __init__(self, queue_dir: Path) -> None:
        self.queue_dir = queue_dir

    def add(self, addr: str, token: str, start_ts: int) -> Notification:
        path = self.queue_dir / uuid.uuid4().hex
        write_atomic(path, serialize(addr, start_ts, token))
        return Notification(addr=addr, token=token, start_ts=start_ts, path=path)

    def remove(self, notification: Notification) -> None:
        notification.path.unlink(missing_ok=True)

    def load(self) -> list[Notification]:
        """All stored notifications, oldest first; drops leftovers of interrupted writes."""
        notifications = []
        for path in self.queue_dir.iterdir():
            try:
                if path.name.endswith(TMP_SUFFIX):
                    raise ValueError("unfinished write")
                notifications.append(parse(path, path.read_bytes()))
            except (ValueError, IsADirectoryError) as e:
                log.warning("removing broken queue entry %s: %s", path.name, e)
                path.unlink(missing_ok=True)
        notifications.sort(key=lambda n: n.start_ts)
        return notifications


# --- HTTP


_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpPoster:
    """POSTs bodies to one URL over a kept-alive connection (one instance per worker thread)."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> int | None:
        """The HTTP status, or None if no response came."""
        may_be_stale = self._conn is not None
        while True:
            try:
                return self._post_once(body)
            except _STALE_CONNECTION_ERRORS as e:
                if may_be_stale:  # the server closed the idle kept-alive connection: afresh
                    may_be_stale = False
                    continue
                error: Exception = e
            except (OSError, http.client.HTTPException) as e:
                error = e
            log.warning("notification request failed: %s", error)
            return None

    def _post_once(self, body: bytes) -> int:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        try:
            self._conn.request(
                "POST", self._path, body=body, headers={"Content-Type": "text/plain; charset=utf-8"}
            )
            response = self._conn.getresponse()
            response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _resolve(future: asyncio.Future[int | None], status: int | None) -> None:
    if not future.done():
        future.set_result(status)


class HttpWorkers:
    """A fixed set of daemon threads doing blocking HTTP posts for the event loop.

    Daemon threads, so that a request hanging until its timeout never delays shutdown: the queue
    file of its notification stays, and it is sent again after the restart.
    """

    def __init__(self, url: str, count: int) -> None:
        self._url = url
        self._jobs: queue.SimpleQueue[tuple[bytes, asyncio.AbstractEventLoop, asyncio.Future]] = (
            queue.SimpleQueue()
        )
        HttpPoster(url)  # check the URL now rather than in every thread
        for i in range(count):
            threading.Thread(target=self._work, name=f"notify-{i}", daemon=True).start()

    async def post(self, body: bytes) -> int | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        self._jobs.put((body, loop, future))
        return await future

    def _work(self) -> None:
        poster = HttpPoster(self._url)
        while True:
            body, loop, future = self._jobs.get()
            status = poster.post(body)
            try:
                loop.call_soon_threadsafe(_resolve, future, status)
            except RuntimeError:  # the loop is closed: the process is shutting down
                return


# --- scheduling


class Notifier:
    """Sends and retries notifications; all methods run in the event loop's thread."""

    def __init__(
        self,
        queue_dir: Path,
        remove_token: RemoveToken,
        url: str = DEFAULT_NOTIFY_URL,
        base_delay: float = RETRY_BASE_DELAY,
        workers: int = DEFAULT_WORKERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._queue = NotificationQueue(queue_dir)
        self._remove_token = remove_token
        self._url = url
        self._base_delay = base_delay
        self._worker_count = workers
        self._clock = clock
        self._http: HttpWorkers | None = None
        self._slots = asyncio.Semaphore(workers)
        self._waiting: set[tuple[str, str]] = set()  # keys scheduled but not yet being sent
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the HTTP workers and resume the notifications stored by an earlier run."""
        self._http = HttpWorkers(self._url, self._worker_count)
        for notification in self._queue.load():
            self._schedule(notification, attempt=0)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def notify(self, addr: str, tokens: Iterable[str]) -> None:
        """Queue a notification to each of ``tokens`` of ``addr`` (durably, before returning)."""
        start_ts = int(self._clock())
        for token in tokens:
            if (addr, token) not in self._waiting:
                self._schedule(self._queue.add(addr, token, start_ts), attempt=0)

    def _schedule(self, notification: Notification, attempt: int) -> None:
        when = attempt_time(notification.start_ts, attempt, self._clock(), self._base_delay)
        if when is None:
            log.error("giving up notifying %s after %d attempts", notification.addr, attempt)
            self._queue.remove(notification)
            return
        if notification.key in self._waiting:
            self._queue.remove(notification)  # the waiting one will wake the device
            return
        self._waiting.add(notification.key)
        task = asyncio.get_running_loop().create_task(self._attempt(notification, attempt, when))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, notification: Notification, attempt: int, when: float) -> None:
        assert self._http is not None, "start() was not called"
        try:
            await asyncio.sleep(max(0.0, when - self._clock()))
            await self._slots.acquire()
        finally:
            self._waiting.discard(notification.key)
        try:
            status = await self._http.post(notification.token.encode())
        finally:
            self._slots.release()
        outcome = outcome_of(status)
        if outcome is Outcome.RETRY:
            log.warning("notifying %s failed (status %s), will retry", notification.addr, status)
            self._schedule(notification, attempt + 1)
            return
        if outcome is Outcome.TOKEN_GONE:
            log.info(
                "notification service says a token of %s is gone: removing it", notification.addr
            )
            try:
                self._remove_token(notification.addr, notification.token)
            except (OSError, ValueError) as e:  # ValueError: the mailbox is gone meanwhile
                log.error("could not remove the token of %s: %s", notification.addr, e)
        self._queue.remove(notification)
