"""Tenacity's strategies for one policy, built once: they carry no per-call state."""

from __future__ import annotations

import tenacity

from ._policy import RetryPolicy

__all__ = ["MAX_SLEEP", "Strategies"]

MAX_SLEEP = 1e9
"""Longest single sleep, in seconds (about 31 years): ``time.sleep`` and event loops refuse
values past ~9.2e9, and a policy may accept hints longer than that."""


class Strategies:
    """Tenacity's strategies for one policy, built once: they carry no per-call state."""

    __slots__ = ("backoff", "deadline_stop", "policy", "stop")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = tenacity.wait_random_exponential(
            multiplier=policy.initial_wait, max=policy.max_wait
        )
        """Full-jitter exponential backoff: ``uniform(0, min(max_wait, initial * 2**(n-1)))``."""
        self.deadline_stop: tenacity.stop.stop_base | None = (
            tenacity.stop_before_delay(policy.timeout) if policy.timeout > 0 else None
        )
        self.stop = self.stop_after(policy.max_attempts)

    def stop_after(self, max_attempts: int) -> tenacity.stop.stop_base:
        """``stop_after_attempt(n) | stop_before_delay(deadline)``."""
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(max_attempts)
        if self.deadline_stop is not None:
            stop = stop | self.deadline_stop
        return stop
