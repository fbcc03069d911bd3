"""Per-sender GCRA rate limiter with a fake clock."""

from __future__ import annotations

import pytest

from chatmaild.ratelimit import SendRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def allowed_count(limiter: SendRateLimiter, sender: str, attempts: int) -> int:
    return sum(limiter.allow(sender) for _ in range(attempts))


def test_burst_then_refused(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=60, burst=10, clock=clock)
    assert [limiter.allow("a@x") for _ in range(11)] == [True] * 10 + [False]
    assert not limiter.allow("a@x")


def test_refills_one_per_interval(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=60, burst=10, clock=clock)
    assert allowed_count(limiter, "a@x", 20) == 10
    clock.now += 0.99
    assert not limiter.allow("a@x")
    clock.now += 0.01
    assert limiter.allow("a@x")
    assert not limiter.allow("a@x")
    clock.now += 5
    assert allowed_count(limiter, "a@x", 20) == 5


def test_sustained_rate_per_minute(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=30, burst=5, clock=clock)
    sent = 0
    for _ in range(600):  # one attempt every 0.1 s for a minute
        sent += limiter.allow("a@x")
        clock.now += 0.1
    assert sent == 5 + 30 - 1  # the burst, then one every 2 s (the last one is still due)


def test_refusals_do_not_cost_tokens(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=60, burst=2, clock=clock)
    assert allowed_count(limiter, "a@x", 100) == 2
    clock.now += 1
    assert limiter.allow("a@x")


def test_full_refill_after_idle(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=6, burst=3, clock=clock)
    assert allowed_count(limiter, "a@x", 5) == 3
    clock.now += 3600
    assert allowed_count(limiter, "a@x", 5) == 3


def test_senders_are_independent(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.allow("a@x")
    assert not limiter.allow("a@x")
    assert limiter.allow("b@x")


def test_burst_of_one(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=120, burst=1, clock=clock)
    assert limiter.allow("a@x")
    assert not limiter.allow("a@x")
    clock.now += 0.5
    assert limiter.allow("a@x")


def test_memory_is_bounded_by_recent_senders(clock: FakeClock):
    limiter = SendRateLimiter(per_minute=60, burst=10, clock=clock)
    for i in range(100_000):
        limiter.allow(f"user{i}@x")
        clock.now += 0.01  # a sender's bucket refills within 1 s
    # only senders of the last second (about 100) and at most one sweep interval are kept
    assert len(limiter) <= 2100
    # eviction does not forget a sender that is still limited
    for _ in range(10):
        limiter.allow("busy@x")
    for i in range(5000):
        limiter.allow(f"other{i}@x")
    assert not limiter.allow("busy@x")


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (1, 0)])
def test_invalid_parameters(per_minute: int, burst: int):
    with pytest.raises(ValueError):
        SendRateLimiter(per_minute=per_minute, burst=burst)
