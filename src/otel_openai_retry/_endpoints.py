"""One guard per pacing key: the only owner of pacing and the retry budget.

The retry loop asks its guard whether sends are paced now (and whether by tokens: only then does
a call estimate its tokens), how long to wait for a send slot before an attempt, and whether a
retry may be sent (the budget); it tells it that an attempt was sent, what an answer said (status
and headers, for the pacer), and what a token-paced answer really cost. Both halves are optional
(``adaptive`` and ``budget`` in the policy); with both off every call shares :data:`NULL_GUARD`,
which costs a method call and nothing else. A fleet-shared guard (Redis, ``_fleet_guard``) is
another implementation of :class:`EndpointGuard`; its slot may need a round trip, which an async
call awaits (:meth:`~EndpointGuard.aslot_delay`) rather than block its event loop.

Requests and tokens: OpenAI limits both, and a 429's body says which was hit. A guard paces
tokens only once told of a ``tokens`` 429 (``throttled(..., limit="tokens")``; any other 429
paces requests). While it does (``pacing_tokens()``), each send passes its estimated tokens to
``slot_delay(now, latest, tokens)`` (0 otherwise), the slot being the later of the request slot
and the token slot, and ``tokens_used(now, reserved, used)`` corrects the reservation of a send
that reserved ``reserved > 0`` tokens once its answer's usage is known; a send answered 429 may
get its tokens back (``throttled(..., reserved=...)``: see ``TokenPacer.refund``). A 429 for
``insufficient_quota`` is never told at all: no wait brings credit back.

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
from ._token_pacing import TokenPacer

if TYPE_CHECKING:
    from ._fleet import Fleet

__all__ = ["NULL_GUARD", "EndpointGuard", "Endpoints", "LocalGuard", "PacingKey"]

MAX_ENDPOINTS = 512

PacingKey = tuple[str, str]
"""(base URL, model): what shares one pacing schedule and one budget."""


class EndpointGuard(Protocol):
    """What the retry loop asks of the pacing and budget of one pacing key."""

    def pacing(self) -> bool:
        """Whether sends are being paced now (so a slot is a queue worth measuring)."""

    def pacing_tokens(self) -> bool:
        """Whether sends reserve tokens now (so a call estimates its own): while
        :meth:`pacing` tokens, or, in a fleet, for the join that may find them paced."""

    def slot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        """Seconds to wait before sending ``tokens`` (the estimate; 0 when not pacing tokens);
        ``None`` when the slot would come after ``latest`` (the caller's deadline: it goes at
        once rather than hold up the schedule); negative when no slot was booked yet (a shared
        queue books only so far ahead): wait that long, then ask again."""

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
        self,
        now: float,
        retry_after: float | None,
        headers: Mapping[str, str] | None,
        limit: str | None = None,
        reserved: int = 0,
        booked: float | None = None,
    ) -> None:
        """The server answered 429; ``retry_after`` only when the call itself will honour it;
        ``limit`` is what the body says was hit (``"tokens"``, ``"requests"`` or ``None``);
        ``reserved``: the tokens the send booked, which the server did not admit, its slot
        taken at ``booked`` (if known)."""

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        """The server accepted an attempt."""

    def tokens_used(
        self,
        now: float,
        reserved: int,
        used: int,
        booked: float | None = None,
        counted: bool = False,
    ) -> None:
        """An answer whose send reserved ``reserved`` tokens (> 0), its slot taken at
        ``booked`` (if known), reported ``used``; ``counted``: the answer was counted already,
        at its estimate, when it came (a stream): only usage above that is news."""


class _NullGuard:
    """Pacing and budget both off."""

    __slots__ = ()

    def pacing(self) -> bool:
        return False

    def pacing_tokens(self) -> bool:
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
        self,
        now: float,
        retry_after: float | None,
        headers: Mapping[str, str] | None,
        limit: str | None = None,
        reserved: int = 0,
        booked: float | None = None,
    ) -> None:
        pass

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        pass

    def tokens_used(
        self,
        now: float,
        reserved: int,
        used: int,
        booked: float | None = None,
        counted: bool = False,
    ) -> None:
        pass


NULL_GUARD: EndpointGuard = _NullGuard()


class LocalGuard:
    """Pacing and budget kept in this process."""

    __slots__ = ("budget", "limiter", "tokens")

    def __init__(
        self,
        limiter: AdaptiveLimiter | None,
        budget: RetryBudget | None,
        tokens: TokenPacer | None = None,
    ) -> None:
        self.limiter = limiter
        self.budget = budget
        self.tokens = tokens

    def pacing(self) -> bool:
        limiter, tokens = self.limiter, self.tokens
        return (limiter is not None and limiter.engaged) or (tokens is not None and tokens.engaged)

    def pacing_tokens(self) -> bool:
        tokens = self.tokens
        return tokens is not None and tokens.engaged

    def slot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        limiter = self.limiter
        delay = 0.0 if limiter is None else limiter.reserve(now, latest)
        pacer = self.tokens
        if delay is None or delay < 0 or pacer is None or not pacer.engaged:
            return delay  # (negative: no request slot yet, so no token slot either)
        return pacer.reserve(now, tokens, now + delay, latest)

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
        self,
        now: float,
        retry_after: float | None,
        headers: Mapping[str, str] | None,
        limit: str | None = None,
        reserved: int = 0,
        booked: float | None = None,
    ) -> None:
        if reserved and self.tokens is not None:
            self.tokens.refund(now, reserved, limit == "tokens", booked)
        if limit == "tokens" and self.tokens is not None:
            self.tokens.on_throttled(now, headers, booked)
            return  # the token limit: request pacing is not told (its rate was not the cause)
        if self.limiter is not None:
            self.limiter.on_throttled(now, retry_after, headers)

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        if self.limiter is not None:
            self.limiter.on_success(now, headers)
        if self.tokens is not None:
            self.tokens.on_success(now, headers)

    def tokens_used(
        self,
        now: float,
        reserved: int,
        used: int,
        booked: float | None = None,
        counted: bool = False,
    ) -> None:
        if self.tokens is not None:
            self.tokens.used(now, reserved, used, booked, counted)


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
        adaptive = self._adaptive
        local = LocalGuard(
            AdaptiveLimiter(max_gate=self._max_gate) if adaptive else None,
            RetryBudget(self._budget) if self._budget > 0 else None,
            TokenPacer(max_gate=self._max_gate) if adaptive else None,
        )
        if self._fleet is None:
            return local
        from ._fleet_guard import RedisGuard

        return RedisGuard(self._fleet, key, local, self._max_gate)
