"""Per-sender send rate limit: a GCRA (generic cell rate algorithm, a token bucket kept as one
timestamp per sender), as newer upstream filtermail does with ``max_user_send_per_minute`` and
``max_user_send_burst_size``.

A sender may send ``burst`` mails at once and then one every ``60 / per_minute`` seconds. Memory
is bounded by the senders active within the last ``burst * 60 / per_minute`` seconds: a sender whose
bucket has refilled is indistinguishable from a new one and gets dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Sweeping costs O(senders); doing it only when the table doubled keeps it O(1) per call.
_MIN_SWEEP_SIZE = 1024


class SendRateLimiter:
    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute < 1 or burst < 1:
            raise ValueError("per_minute and burst must be at least 1")
        self._interval = 60.0 / per_minute
        # how far a sender's "theoretical arrival time" may run ahead of now
        self._tolerance = self._interval * (burst - 1)
        self._clock = clock
        self._arrival: dict[str, float] = {}
        self._sweep_at = _MIN_SWEEP_SIZE

    def allow(self, sender: str) -> bool:
        """Count one mail from ``sender`` if the limit permits it; False if it does not."""
        now = self._clock()
        arrival = max(self._arrival.get(sender, now), now)
        if arrival - now > self._tolerance:
            return False
        self._arrival[sender] = arrival + self._interval
        if len(self._arrival) > self._sweep_at:
            self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        self._arrival = {sender: t for sender, t in self._arrival.items() if t > now}
        self._sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._arrival))

    def __len__(self) -> int:
        """Number of senders currently remembered."""
        return len(self._arrival)
