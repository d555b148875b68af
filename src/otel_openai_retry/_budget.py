"""The retry budget: retries may add at most ``ratio`` extra load on an endpoint.

When a server is down, five attempts per call multiply the load on it by five just when it can
least take it. A budget in the manner of Finagle's (and the SRE book's "retries under 10 % of
requests") caps that: every request deposits ``ratio`` of a retry, every retry withdraws one, and
a small reserve lets a quiet application still retry its occasional failure. Deposits expire
after ``window`` seconds, so an outage cannot live on credit saved up long before it.

Pure: the clock is passed in; one lock makes it safe for threads as well as tasks.
"""

from __future__ import annotations

import math
import threading

__all__ = ["RetryBudget"]


class RetryBudget:
    """A sliding-window budget of retries, shared by every call to one endpoint."""

    __slots__ = ("_buckets", "_lock", "_reserve", "_retries", "_width", "ratio", "window")

    def __init__(
        self, ratio: float, *, window: float = 10.0, reserve_per_second: float = 10.0
    ) -> None:
        self.ratio = ratio
        self.window = window
        self._reserve = reserve_per_second * window
        self._width = window / 10
        # bucket index -> [requests, retries]; at most ten live buckets
        self._buckets: dict[int, list[int]] = {}
        self._retries = 0
        self._lock = threading.Lock()

    @property
    def reserve(self) -> float:
        """Retries allowed per window whatever the requests (a quiet application's)."""
        return self._reserve

    def _bucket(self, now: float) -> list[int]:
        index = math.floor(now / self._width)
        bucket = self._buckets.get(index)
        if bucket is None:
            oldest = index - 9
            for stale in [i for i in self._buckets if i < oldest]:
                del self._buckets[stale]
            bucket = self._buckets[index] = [0, 0]
        return bucket

    def record_request(self, now: float) -> None:
        """An attempt was sent (first attempts and retries alike)."""
        with self._lock:
            # The current bucket, found without ``_bucket``'s call: this runs on every attempt.
            bucket = self._buckets.get(math.floor(now / self._width))
            if bucket is None:
                bucket = self._bucket(now)
            bucket[0] += 1

    def try_retry(self, now: float) -> bool:
        """Withdraw one retry if the budget allows it."""
        with self._lock:
            bucket = self._bucket(now)
            requests = sum(b[0] for b in self._buckets.values())
            retries = sum(b[1] for b in self._buckets.values())
            if retries + 1 > self.ratio * requests + self._reserve:
                return False
            bucket[1] += 1
            return True
