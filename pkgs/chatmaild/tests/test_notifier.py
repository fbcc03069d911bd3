"""Notification rules, the durable queue, the HTTP poster and the retrying Notifier."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatmaild.notifier import (
    DROP_DEADLINE,
    HttpPoster,
    NotificationQueue,
    Notifier,
    Outcome,
    attempt_time,
    outcome_of,
    retry_delay,
)

WAIT = 10.0  # upper bound of every wait in these tests


class FakeEndpoint:
    """A notification service on 127.0.0.1: records POST bodies, answers planned statuses."""

    def __init__(
        self, port: int = 0, drop_after_response: bool = False, delay: float = 0.0
    ) -> None:
        self.bodies: list[bytes] = []
        self.client_ports: list[int] = []  # one per request: tells connections apart
        self.statuses: list[int] = []  # answered in order; 200 once used up
        self.active = 0  # requests being answered now
        self.max_active = 0
        self._changed = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with endpoint._changed:
                    endpoint.active += 1
                    endpoint.max_active = max(endpoint.max_active, endpoint.active)
                time.sleep(delay)
                with endpoint._changed:
                    endpoint.active -= 1
                    status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                    endpoint.bodies.append(body)
                    endpoint.client_ports.append(self.client_address[1])
                    endpoint._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                # like a server timing out an idle connection, without announcing it
                self.close_connection = drop_after_response

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def wait_for_requests(self, count: int, timeout: float = WAIT) -> list[bytes]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- rules


def test_retry_delays_grow_eightfold_like_upstream() -> None:
    assert [retry_delay(n, 8.0) for n in range(5)] == [0, 8, 64, 512, 4096]
    assert [retry_delay(n, 0.5) for n in range(3)] == [0, 0.5, 4.0]


def test_attempts_stop_at_the_deadline() -> None:
    start = 1_000_000
    # upstream's schedule: attempts at +0, +8, +64, +512, +4096 after each failure ...
    now = start
    times = []
    for attempt in range(10):
        when = attempt_time(start, attempt, now, 8.0)
        if when is None:
            break
        times.append(when - start)
        now = when
    assert times == [0, 8, 72, 584, 4680]
    # ... and nothing after five hours, even a first attempt of a notification restored late
    assert attempt_time(start, 0, start + DROP_DEADLINE + 1, 8.0) is None
    assert attempt_time(start, 0, start + DROP_DEADLINE, 8.0) == start + DROP_DEADLINE


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (410, Outcome.TOKEN_GONE),
        (None, Outcome.RETRY),
        (404, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
    ],
)
def test_outcome_of_status(status: int | None, outcome: Outcome) -> None:
    assert outcome_of(status) is outcome


# --- the queue


def test_queue_roundtrip_keeps_odd_tokens(tmp_path: Path) -> None:
    queue = NotificationQueue(tmp_path)
    first = queue.add("a@x.org", "token\nwith newline and trailing space ", 100)
    second = queue.add("b@x.org", "t2", 50)
    loaded = NotificationQueue(tmp_path).load()
    assert loaded == [second, first]  # oldest first
    queue.remove(first)
    assert NotificationQueue(tmp_path).load() == [second]


def test_queue_reads_upstream_entries_and_drops_broken_ones(tmp_path: Path) -> None:
    (tmp_path / "0123abcd").write_text("u@x.org\n1700000000\nopenpgp:abc")
    (tmp_path / "4567.tmp").write_text("u@x.org\n1700000000\nhalf")  # interrupted write
    (tmp_path / "89ab").write_text("")  # empty
    (tmp_path / "cdef").write_text("u@x.org\nnot-a-number\ntoken")
    [entry] = NotificationQueue(tmp_path).load()
    assert (entry.addr, entry.start_ts, entry.token) == ("u@x.org", 1700000000, "openpgp:abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0123abcd"]


# --- HTTP


def test_poster_sends_body_and_reuses_the_connection(endpoint: FakeEndpoint) -> None:
    poster = HttpPoster(endpoint.url)
    endpoint.statuses = [200, 410]
    assert poster.post(b"tok1") == 200
    assert poster.post(b"tok2") == 410
    assert endpoint.bodies == [b"tok1", b"tok2"]
    assert endpoint.client_ports[0] == endpoint.client_ports[1]


def test_poster_retries_once_on_a_connection_the_server_dropped() -> None:
    endpoint = FakeEndpoint(drop_after_response=True)
    try:
        poster = HttpPoster(endpoint.url)
        assert poster.post(b"a") == 200
        assert poster.post(b"b") == 200
        assert endpoint.bodies == [b"a", b"b"]
        assert endpoint.client_ports[0] != endpoint.client_ports[1]
    finally:
        endpoint.close()


def test_poster_reports_an_unreachable_server_as_none() -> None:
    assert HttpPoster(f"http://127.0.0.1:{free_port()}/notify", timeout=2).post(b"x") is None


def test_poster_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        HttpPoster("ftp://example.org/notify")


# --- the Notifier


class TokenRemovals(list[tuple[str, str]]):
    def __call__(self, addr: str, token: str) -> None:
        self.append((addr, token))


async def wait_until(condition, timeout: float = WAIT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_notifier_posts_each_token_and_empties_the_queue(
    tmp_path: Path, endpoint: FakeEndpoint
) -> None:
    async def scenario() -> None:
        notifier = Notifier(tmp_path, TokenRemovals(), url=endpoint.url)
        await notifier.start()
        notifier.notify("a@x.org", ["t1", "t2"])
        assert len(list(tmp_path.iterdir())) == 2  # stored before notify() returned
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    asyncio.run(scenario())
    assert sorted(endpoint.bodies) == [b"t1", b"t2"]


def test_notifier_removes_gone_tokens(tmp_path: Path, endpoint: FakeEndpoint) -> None:
    removals = TokenRemovals()
    endpoint.statuses = [410]

    async def scenario() -> None:
        notifier = Notifier(tmp_path, removals, url=endpoint.url)
        await notifier.start()
        notifier.notify("a@x.org", ["old"])
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    asyncio.run(scenario())
    assert removals == [("a@x.org", "old")]
    assert endpoint.bodies == [b"old"]


def test_notifier_finishes_a_gone_token_of_a_deleted_mailbox(
    tmp_path: Path, endpoint: FakeEndpoint
) -> None:
    endpoint.statuses = [410]

    def mailbox_deleted(addr: str, token: str) -> None:
        raise ValueError(f"{addr} has no mailbox")

    async def scenario() -> None:
        notifier = Notifier(tmp_path, mailbox_deleted, url=endpoint.url)
        await notifier.start()
        notifier.notify("a@x.org", ["old"])
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    asyncio.run(scenario())


def test_notifier_retries_with_backoff_until_delivered(
    tmp_path: Path, endpoint: FakeEndpoint
) -> None:
    endpoint.statuses = [500, 503]

    async def scenario() -> None:
        notifier = Notifier(tmp_path, TokenRemovals(), url=endpoint.url, base_delay=0.1)
        await notifier.start()
        notifier.notify("a@x.org", ["t"])
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    started = time.monotonic()
    asyncio.run(scenario())
    assert endpoint.bodies == [b"t", b"t", b"t"]
    assert time.monotonic() - started >= 0.1 + 0.8  # the two back-off waits


def test_notifier_keeps_one_waiting_notification_per_token(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: the first attempt fails
    endpoint: FakeEndpoint | None = None

    async def scenario() -> None:
        nonlocal endpoint
        notifier = Notifier(
            tmp_path, TokenRemovals(), url=f"http://127.0.0.1:{port}/n", base_delay=0.5
        )
        await notifier.start()
        notifier.notify("a@x.org", ["t"])
        await asyncio.sleep(0.2)  # first attempt failed, the retry waits
        notifier.notify("a@x.org", ["t", "u"])  # "t" is covered by the waiting retry
        assert len(list(tmp_path.iterdir())) == 2
        endpoint = FakeEndpoint(port)
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    try:
        asyncio.run(scenario())
        assert endpoint is not None
        assert sorted(endpoint.bodies) == [b"t", b"u"]
    finally:
        if endpoint is not None:
            endpoint.close()


def test_notifier_resumes_stored_notifications_and_drops_expired_ones(
    tmp_path: Path, endpoint: FakeEndpoint
) -> None:
    now = time.time()
    queue = NotificationQueue(tmp_path)
    queue.add("a@x.org", "fresh", int(now) - 60)
    queue.add("a@x.org", "stale", int(now) - DROP_DEADLINE - 60)

    async def scenario() -> None:
        notifier = Notifier(tmp_path, TokenRemovals(), url=endpoint.url, clock=lambda: now)
        await notifier.start()
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    asyncio.run(scenario())
    assert endpoint.bodies == [b"fresh"]


def test_notifier_gives_up_at_the_deadline(tmp_path: Path) -> None:
    clock = [1_000_000.0]

    async def scenario() -> None:
        notifier = Notifier(
            tmp_path,
            TokenRemovals(),
            url=f"http://127.0.0.1:{free_port()}/n",
            base_delay=0.05,
            clock=lambda: clock[0],
        )
        await notifier.start()
        notifier.notify("a@x.org", ["t"])
        await asyncio.sleep(0.3)  # a few failed attempts
        assert len(list(tmp_path.iterdir())) == 1
        clock[0] += DROP_DEADLINE  # the next retry falls after the deadline
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    asyncio.run(scenario())


def test_notifier_bounds_concurrent_requests(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(delay=0.1)

    async def scenario() -> None:
        notifier = Notifier(tmp_path, TokenRemovals(), url=endpoint.url, workers=3)
        await notifier.start()
        notifier.notify("a@x.org", [f"t{i}" for i in range(12)])
        await wait_until(lambda: not list(tmp_path.iterdir()))
        await notifier.stop()

    try:
        asyncio.run(scenario())
        assert len(endpoint.bodies) == 12
        assert endpoint.max_active == 3
    finally:
        endpoint.close()
