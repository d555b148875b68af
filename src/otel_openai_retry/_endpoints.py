"""Per-endpoint shared state: the pacing schedule and the retry budget.

An endpoint is a base URL and a model: rate limits and outages are per deployment, and calls to
other models must not be slowed by one model's limit. The map is bounded so that an application
cycling through many models cannot grow it without limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ._budget import RetryBudget
from ._pacing import AdaptiveLimiter
from ._policy import RetryPolicy

__all__ = ["EndpointState", "Endpoints"]

MAX_ENDPOINTS = 512


@dataclass(slots=True)
class EndpointState:
    limiter: AdaptiveLimiter | None
    budget: RetryBudget | None


class Endpoints:
    """Endpoint key → its shared state, created on first use, oldest dropped past the bound."""

    __slots__ = ("_adaptive", "_budget", "_lock", "_max_gate", "_states")

    def __init__(self, policy: RetryPolicy) -> None:
        self._adaptive = policy.adaptive
        # No caller waits at the pacing gate longer than the policy lets a server make it wait.
        self._max_gate = policy.max_retry_after
        self._budget = policy.budget
        self._states: dict[tuple[str, str], EndpointState] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._adaptive or self._budget > 0

    def get(self, base_url: str, model: str) -> EndpointState:
        key = (base_url, model)
        state = self._states.get(key)
        if state is not None:
            return state
        with self._lock:
            state = self._states.get(key)
            if state is None:
                if len(self._states) >= MAX_ENDPOINTS:
                    del self._states[next(iter(self._states))]
                state = self._states[key] = EndpointState(
                    AdaptiveLimiter(max_gate=self._max_gate) if self._adaptive else None,
                    RetryBudget(self._budget) if self._budget > 0 else None,
                )
            return state
