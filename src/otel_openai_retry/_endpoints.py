"""One guard per pacing key: the only owner of pacing and the retry budget.

The retry loop asks its guard four things and tells it one: whether sends are paced now, how long
to wait for a send slot before an attempt, that an attempt was sent, whether a retry may be sent
(the budget), and what an answer said (status and headers, for the pacer). Both halves are
optional (``adaptive`` and ``budget`` in the policy); with both off every call shares
:data:`NULL_GUARD`, which costs a method call and nothing else. A fleet-shared guard (Redis,
``_fleet_guard``) is another implementation of :class:`EndpointGuard`; its slot may need a round
trip, which an async call awaits (:meth:`~EndpointGuard.aslot_delay`) rather than block its event
loop.

The pacing key is a base URL and a model: rate limits and outages are per deployment, and calls
to other models must not be slowed by one model's limit. The map is bounded so that an
application cycling through many models cannot grow it without limit.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ._budget import RetryBudget
from ._errors import ConfigurationError
from ._pacing import AdaptiveLimiter
from ._policy import ENV_VARS, RetryPolicy

if TYPE_CHECKING:
    from ._fleet import Fleet

__all__ = [
    "NULL_GUARD",
    "EndpointGuard",
    "Endpoints",
    "LocalGuard",
    "PacingKey",
    "take_slot",
    "take_slot_async",
]

MAX_ENDPOINTS = 512

PacingKey = tuple[str, str]
"""(base URL, model): what shares one pacing schedule and one budget."""


class EndpointGuard(Protocol):
    """What the retry loop asks of the pacing and budget of one pacing key."""

    def pacing(self) -> bool:
        """Whether sends are being paced now (so a slot is a queue worth measuring)."""

    def slot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        """Seconds to wait before sending; ``None`` when the slot would come after ``latest``
        (the caller's deadline: it goes at once rather than hold up the schedule)."""

    def shared_slot(self) -> bool:
        """Whether the next slot is booked in a shared store, a round trip away: an async call
        then awaits :meth:`aslot_delay` instead of calling :meth:`slot_delay`."""

    async def aslot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        """:meth:`slot_delay` without blocking the running event loop."""

    def sent(self, now: float) -> None:
        """An attempt went out."""

    def may_retry(self, now: float, status_code: int | None) -> bool:
        """Whether the budget lets this retry go out; asked only for a retry that will be sent."""

    def throttled(
        self, now: float, retry_after: float | None, headers: Mapping[str, str] | None
    ) -> None:
        """The server answered 429; ``retry_after`` only when the call itself will honour it."""

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        """The server accepted an attempt."""


class _NullGuard:
    """Pacing and budget both off."""

    __slots__ = ()

    def pacing(self) -> bool:
        return False

    def slot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        return 0.0

    def shared_slot(self) -> bool:
        return False

    async def aslot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        return 0.0

    def sent(self, now: float) -> None:
        pass

    def may_retry(self, now: float, status_code: int | None) -> bool:
        return True

    def throttled(
        self, now: float, retry_after: float | None, headers: Mapping[str, str] | None
    ) -> None:
        pass

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        pass


NULL_GUARD: EndpointGuard = _NullGuard()


def take_slot(guard: EndpointGuard, now: float, latest: float) -> tuple[float | None, str | None]:
    """The wait for a send slot (see :meth:`EndpointGuard.slot_delay`) and, while sends are
    paced, how the queue answered: ``acquired`` at once, ``delayed``, or ``rejected`` (the slot
    would come after ``latest``)."""
    paced = guard.pacing()
    return _queue_result(paced, guard.slot_delay(now, latest))


async def take_slot_async(
    guard: EndpointGuard, now: float, latest: float
) -> tuple[float | None, str | None]:
    """:func:`take_slot` for a guard whose slot is a round trip away (see ``shared_slot``)."""
    paced = guard.pacing()
    return _queue_result(paced, await guard.aslot_delay(now, latest))


def _queue_result(paced: bool, delay: float | None) -> tuple[float | None, str | None]:
    if not paced:
        return delay, None
    return delay, "rejected" if delay is None else "delayed" if delay > 0 else "acquired"


class LocalGuard:
    """Pacing and budget kept in this process."""

    __slots__ = ("budget", "limiter")

    def __init__(self, limiter: AdaptiveLimiter | None, budget: RetryBudget | None) -> None:
        self.limiter = limiter
        self.budget = budget

    def pacing(self) -> bool:
        limiter = self.limiter
        return limiter is not None and limiter.engaged

    def slot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        limiter = self.limiter
        return 0.0 if limiter is None else limiter.reserve(now, latest)

    def shared_slot(self) -> bool:
        return False

    async def aslot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        return self.slot_delay(now, latest, tokens)

    def sent(self, now: float) -> None:
        if self.budget is not None:
            self.budget.record_request(now)

    def may_retry(self, now: float, status_code: int | None) -> bool:
        # A 429 is the server pacing us, not failing: the pacer handles it, not the budget.
        return self.budget is None or status_code == 429 or self.budget.try_retry(now)

    def throttled(
        self, now: float, retry_after: float | None, headers: Mapping[str, str] | None
    ) -> None:
        if self.limiter is not None:
            self.limiter.on_throttled(now, retry_after, headers)

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        if self.limiter is not None:
            self.limiter.on_success(now, headers)


class Endpoints:
    """Pacing key → its guard, created on first use, oldest dropped past the bound."""

    __slots__ = ("_adaptive", "_budget", "_fleet", "_guards", "_lock", "_max_gate")

    def __init__(self, policy: RetryPolicy) -> None:
        self._adaptive = policy.adaptive
        # No caller waits at the pacing gate longer than the policy lets a server make it wait.
        self._max_gate = policy.max_retry_after
        self._budget = policy.budget
        self._guards: dict[PacingKey, EndpointGuard] = {}
        self._lock = threading.Lock()
        self._fleet: Fleet | None = None
        if policy.redis_url and (policy.adaptive or policy.budget > 0):
            try:
                from ._fleet import Fleet  # redis-py, imported only by who configured it
            except ImportError as exc:
                if not (exc.name or "").startswith("redis"):
                    raise
                raise ConfigurationError(
                    f"{ENV_VARS['redis_url']} is set but redis-py is not installed: "
                    "pip install 'otel-openai-retry[redis]'"
                ) from None
            try:
                self._fleet = Fleet(policy.redis_url)
            except ValueError as exc:  # what redis-py refuses in a URL that looked right
                raise ConfigurationError(f"{ENV_VARS['redis_url']}: {exc}") from None

    def close(self) -> None:
        """Stop sharing (uninstrumented): the fleet's reporter ends, its connections close."""
        if self._fleet is not None:
            self._fleet.close()

    def guard(self, base_url: str, model: str) -> EndpointGuard:
        if not self._adaptive and self._budget <= 0:
            return NULL_GUARD
        key = (base_url, model)
        guard = self._guards.get(key)
        if guard is not None:
            return guard
        with self._lock:
            guard = self._guards.get(key)
            if guard is None:
                if len(self._guards) >= MAX_ENDPOINTS:
                    del self._guards[next(iter(self._guards))]
                guard = self._guards[key] = self._new_guard(key)
            return guard

    def _new_guard(self, key: PacingKey) -> EndpointGuard:
        local = LocalGuard(
            AdaptiveLimiter(max_gate=self._max_gate) if self._adaptive else None,
            RetryBudget(self._budget) if self._budget > 0 else None,
        )
        if self._fleet is None:
            return local
        from ._fleet_guard import RedisGuard

        return RedisGuard(self._fleet, key, local, self._max_gate)
