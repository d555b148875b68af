"""The endpoint guard of a fleet: pacing and the retry budget shared through Redis.

It wraps the per-process guard, which keeps learning from every answer as if alone, so that it
can take over at any moment: whenever Redis is down or slow, and, under trio, for the slot itself.
What the fleet adds:

- a lease: until the fleet paces the endpoint (as last heard by the reporter, at most
  ``REPORT_EVERY`` ago), a slot is the local guard's, with no round trip; while it paces, each
  attempt books its slot with one atomic reservation (requests and tokens together), no
  further ahead than ``HORIZON``: further back in the queue, the caller is told to wait and ask
  again (a negative delay), so a rate the fleet learns meanwhile reaches it;
- a join: the process's first call to the endpoint books its slot in Redis (one round trip per
  endpoint per process), which says at once whether the fleet paces it (or paced it lately: the
  fleet then paces again at the rates it learnt), so a process starting into a paced fleet sends
  no unpaced first wave; the calls that come while that answer is on its way wait for it (no
  longer than a round trip may take) rather than go unpaced;
- a 429 that the local limiter takes as a reason to pace (not one it judged independent of our
  rate) is reported at once, with its ``Retry-After`` gate and the header rates: the whole fleet
  paces from the next report on; while it paces, every 429 is reported, so that the fleet judges
  from its own counts whether its rate is what they depend on (a process's limiter judges the
  fleet's schedule as if it were its own);
- a token limit whose rate no header states is found by the fleet from all its processes'
  answers (``_fleet_token_finder``: each process alone, slowing its own tokens, sees the others'
  keep the 429s coming): those 429s and the tokens of the successes go with each report, and
  the slots book tokens at the rate found; until the fleet has one (or with Redis away), each
  process paces the tokens at the rate it finds itself, but not while it hears the fleet's
  verdict that its tokens do not matter (its trial would only slow it down);
- the budget counts requests and retries locally; the reporter adds them to the fleet's counts
  every ``REPORT_EVERY`` and reads back the fleet's totals, which decide (with what was counted
  since) whether a retry may go. A fleet can so overspend by what its processes retry within one
  report, which a burst of failures could not make more than a share of the reserve.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._fleet import REPORT_EVERY, ROUND_TRIP_TIMEOUT, Fleet, Reservation
from ._fleet_scripts import HORIZON, NOT_PACED, TOO_LATE
from ._pacing import DISENGAGE_AFTER
from ._rate_headers import read_limit, refill_rate, shared_gate
from ._token_pacing import remember_refused

if TYPE_CHECKING:
    from ._endpoints import LocalGuard, PacingKey

__all__ = ["RedisGuard", "redis_key", "token_refill"]

TOKEN_VERDICT_HELD = 10 * REPORT_EVERY
"""Seconds a process holds the fleet's verdict that its tokens do not matter, from each report
that says so (every ``REPORT_EVERY`` while the endpoint is used): unheard longer (Redis away),
the process judges for itself again."""

TOKEN_BURST = 1.0
"""Seconds of tokens the shared token schedule lets go at once. The headers' limit is per
minute, while servers enforce it over short windows (Azure: 1 s and 10 s), and no process of a
fleet sees the others' ``remaining``: a second's worth is what no such window refuses."""

ASK_AGAIN_AFTER = 0.001
"""Seconds a caller told to ask again waits at least (a wait the script rounded to zero)."""
TOKENS_REPORTED_AT_MOST = 10**9
"""Tokens one answer adds to a report at most: usage is the server's word, and a count past what
Redis's integers hold would fail the whole report pipeline (every endpoint's)."""
STALE = 3.0
"""Seconds after which the fleet's budget counts are too old to decide by (the local budget
does)."""


def redis_key(key: PacingKey) -> str:
    """A short, fixed-shape key per endpoint (base URLs and model names hold any character)."""
    digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:32]
    return f"otel_openai_retry:{{{digest}}}"


def token_refill(headers: Mapping[str, str]) -> tuple[float, int] | None:
    """Tokens per second the server refills and the burst the shared schedule allows, from
    ``x-ratelimit-*-tokens`` (read as the per-process token pacer reads them)."""
    found = read_limit(headers, "tokens")
    if found is None or found.rate is None:
        return None
    return found.rate, max(1, min(found.limit, math.ceil(found.rate * TOKEN_BURST)))


class RedisGuard:
    """Pacing and the budget of one pacing key, shared by every process using one Redis."""

    __slots__ = (
        "__weakref__",
        "_answered",
        "_counting_since",
        "_engaged_until",
        "_fleet",
        "_gate_until",
        "_hinted",
        "_independent_until",
        "_joined",
        "_joining",
        "_lock",
        "_news",
        "_refused",
        "_token_429_at",
        "_tokens_apart",
        "_tokens_hinted",
        "_totals",
        "key",
        "local",
        "max_gate",
    )

    def __init__(self, fleet: Fleet, key: PacingKey, local: LocalGuard, max_gate: float) -> None:
        self._fleet = fleet
        self.key = redis_key(key)
        self.local = local
        """The per-process guard: told everything, and in charge whenever Redis is not."""
        self.max_gate = max_gate
        self._engaged_until = 0.0
        """Monotonic time until which the fleet paces this endpoint, as last heard."""
        self._independent_until = 0.0
        """Until then the fleet judges the 429s independent of its rate, as last heard."""
        self._totals: tuple[int, int, float] | None = None
        """The fleet's requests and retries over the budget's window, and when heard."""
        self._news = [0, 0, 0, 0, 0, 0, 0, 0]
        """Since the last report: requests sent, retries sent, 429s, successes, tokens answers
        used beyond what their sends booked, token 429s no header rate explains, and the tokens
        of the successes to sends that reserved tokens, and how many."""
        self._gate_until: float | None = None
        self._hinted: float | None = None
        self._tokens_hinted: tuple[float, int] | None = None
        self._refused: dict[int, None] = {}
        """Sizes of sends the fleet's found token schedule let go that the limit refused (the
        oldest forgotten first): the same send asking again books all of its tokens."""
        self._token_429_at = -math.inf
        self._tokens_apart = False
        """Whether the last report heard the fleet judge its tokens not to matter."""
        self._counting_since = math.inf
        """Since when the successes' tokens go with the reports: this process met a token 429
        no header explains, or heard that the fleet paces. A send booked before came out of a
        bucket not yet drained: what got through then is not the limit."""
        self._lock = threading.Lock()
        self._joining = False
        self._joined = threading.Event()
        """Set once the process's first reservation (its join) has been answered or failed."""
        self._answered: asyncio.Future[None] | None = None
        """The same, for async calls waiting on the event loop of an async join."""
        fleet.register(self)

    # -- what the retry loop asks -----------------------------------------------------------------

    def pacing(self) -> bool:
        return self.local.pacing() or self.fleet_paces()

    def fleet_paces(self) -> bool:
        """Whether the fleet paces the endpoint, as last heard (and Redis is up)."""
        return (
            self._engaged_until > time.monotonic()
            and self._fleet.up
            and self.local.limiter is not None
        )

    def shared_slot(self) -> bool:
        """Whether a slot is booked in Redis now (a round trip): the fleet paces the endpoint,
        or the process has yet to join it."""
        return self.fleet_paces() or (
            not self._joined.is_set() and self._fleet.up and self.local.limiter is not None
        )

    def slot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        # Never a blocking round trip on a running event loop: an async call that found the
        # fleet not pacing, an instant before the reporter heard otherwise, paces locally.
        if self.shared_slot() and asyncio._get_running_loop() is None:
            joining = self._join_or_wait()
            if joining or self.fleet_paces():  # a join not answered in time: local
                args = self._reservation(now, latest, tokens, joining)
                try:
                    reply = self._fleet.reserve(self.key, args)
                except BaseException:
                    if joining:
                        self._join_abandoned()
                    raise
                return self._slot(reply, now, latest, tokens, joining, whole=args[-1] == 1)
        return self.local.slot_delay(now, latest, tokens)

    async def aslot_delay(self, now: float, latest: float, tokens: int = 0) -> float | None:
        loop = asyncio._get_running_loop()  # None under another event loop (trio): local
        if loop is not None and self.shared_slot():
            joining = self._join_or_wait(block=False)
            if joining:
                self._answered = loop.create_future()
            else:
                await self._join_answered()
            if joining or self.fleet_paces():
                args = self._reservation(now, latest, tokens, joining)
                try:
                    reply = await self._fleet.reserve_async(self.key, args)
                except BaseException:  # the joining call cancelled (its caller's timeout)
                    if joining:
                        self._join_abandoned()
                    raise
                return self._slot(reply, now, latest, tokens, joining, whole=args[-1] == 1)
        return self.local.slot_delay(now, latest, tokens)

    async def _join_answered(self) -> None:
        """Wait for the join's answer (no longer than a round trip may take) when an async call
        of this event loop is on its way with it; a sync one (another thread) or another
        loop's is not waited for (the call paces locally)."""
        answered = self._answered
        if answered is not None and answered.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([answered], timeout=ROUND_TRIP_TIMEOUT)

    def _join_or_wait(self, block: bool = True) -> bool:
        """``True`` for the call that joins (the process's first); another waits for the
        join's answer (sync calls here; async ones poll, never blocking their loop)."""
        if self._joined.is_set():
            return False
        with self._lock:
            joining, self._joining = not self._joining, True
        if not joining and block:
            self._joined.wait(ROUND_TRIP_TIMEOUT)
        return joining

    def _join_abandoned(self) -> None:
        """The joining call left before its answer (cancelled): the next call joins instead.
        Left as it was, every later call would wait for an answer that never comes."""
        with self._lock:
            self._joining = False
        answered, self._answered = self._answered, None
        if answered is not None and not answered.done():
            answered.set_result(None)

    def _reservation(
        self, now: float, latest: float, tokens: int, joining: bool
    ) -> Sequence[float]:
        left = -1.0 if math.isinf(latest) else max(0.0, latest - now) * 1000
        limits = (self.max_gate * 1000, DISENGAGE_AFTER * 1000)
        with self._lock:
            whole = tokens in self._refused  # forgotten once a slot is booked (``_slot``)
        return (1, max(0, tokens), left, *limits, int(joining), HORIZON, int(whole))

    def _slot(
        self,
        reply: Reservation | None,
        now: float,
        latest: float,
        tokens: int,
        joining: bool,
        whole: bool = False,
    ) -> float | None:
        if reply is not None:
            self._heard(reply.engaged_ms, now)
        if joining:  # answered or failed: a process joins once
            self._joined.set()
            answered = self._answered
            if answered is not None and not answered.done():
                answered.set_result(None)
        if reply is None or reply.wait == NOT_PACED:
            return self.local.slot_delay(now, latest, tokens)
        if reply.wait == TOO_LATE:
            return None
        if not reply.booked:  # beyond the horizon: wait, then ask again
            return -max(reply.wait / 1e6, ASK_AGAIN_AFTER)
        if whole and reply.tokens:
            # A refused send asks for all of its tokens until a slot has booked them (asking
            # again beyond the horizon, it was forgotten, and long prompts ran out of attempts);
            # only its own slot, not another send's of the same size.
            with self._lock:
                self._refused.pop(tokens, None)
        if reply.tokens and self.local.tokens is not None:
            self.local.tokens.yield_to_fleet()  # the fleet finds and judges these tokens
        elif self._tokens_found_here():
            # the fleet's request slot, then the tokens at the rate this process found
            assert self.local.tokens is not None
            return self.local.tokens.reserve(now, tokens, now + reply.wait / 1e6, latest)
        return reply.wait / 1e6

    def _heard(self, engaged_ms: int, now: float) -> None:
        """Redis said how long the fleet paces the endpoint from ``now`` (0: it does not)."""
        with self._lock:
            if engaged_ms <= 0:
                # not when the report was taken before this process's own token 429
                if now - self._token_429_at > 2 * REPORT_EVERY:
                    self._counting_since = math.inf
            elif self._engaged_until <= now:
                self._counting_since = min(self._counting_since, now)
            self._engaged_until = now + engaged_ms / 1000 if engaged_ms > 0 else 0.0

    def _tokens_found_here(self) -> bool:
        """Whether this process paces tokens at a rate found from its own answers (no header
        states it): where the fleet's slots book no tokens, the process's own schedule does."""
        tokens = self.local.tokens
        return tokens is not None and tokens.finding

    def sent(self, now: float) -> None:
        self.local.sent(now)
        with self._lock:
            self._news[0] += 1

    def may_retry(self, now: float, status_code: int | None) -> bool:
        budget = self.local.budget
        if budget is None or status_code == 429:
            return True
        totals = self._totals
        if totals is None or now - totals[2] > STALE or not self._fleet.up:
            allowed = self.local.may_retry(now, status_code)
            if allowed:  # decided here, but spent from the fleet's budget all the same
                with self._lock:
                    self._news[1] += 1
            return allowed
        with self._lock:
            requests, retries = totals[0] + self._news[0], totals[1] + self._news[1]
            if retries + 1 > budget.ratio * requests + budget.reserve:
                return False
            self._news[1] += 1
            return True

    def pacing_tokens(self) -> bool:
        # The join books a slot too, with the tokens of its call: the fleet may pace at the
        # token rate it learnt lately.
        return self.local.pacing_tokens() or self.shared_slot()

    def tokens_used(
        self,
        now: float,
        reserved: int,
        used: int,
        booked: float | None = None,
        counted: bool = False,
    ) -> None:
        self.local.tokens_used(now, reserved, used, booked, counted)
        cap = TOKENS_REPORTED_AT_MOST
        reserved, used = min(reserved, cap), min(used, cap)
        with self._lock:
            news = self._news
            if used > reserved:  # the fleet's schedule is charged too, with the next report
                news[4] += used - reserved
            # what got through, for a token rate the fleet finds (a success counted at its
            # estimate adds what it used beyond that once known)
            if booked is None or booked >= self._counting_since:
                news[6] += max(0, used - reserved) if counted else max(reserved, used)
                news[7] += not counted

    def throttled(
        self,
        now: float,
        retry_after: float | None,
        headers: Mapping[str, str] | None,
        limit: str | None = None,
        reserved: int = 0,
        booked: float | None = None,
    ) -> None:
        # Only a process's own found token rate may give back what was not admitted; the
        # fleet's schedule keeps it (a header's rate paces it, and the headers say how full).
        self.local.throttled(now, retry_after, headers, limit, reserved, booked)
        tokens = self.local.tokens
        if limit == "tokens" and tokens is not None and not tokens.stated:
            # no header states the rate: the fleet finds it (request pacing is not told)
            with self._lock:
                self._news[5] += 1
                # a 429 after the fleet stopped pacing starts the count afresh
                fresh = self._engaged_until <= now and now - self._token_429_at > DISENGAGE_AFTER
                since = math.inf if fresh else self._counting_since
                self._counting_since, self._token_429_at = min(since, now), now
                if reserved > 0:
                    remember_refused(self._refused, reserved)
            self._fleet.wake()
            return
        limiter = self.local.limiter
        engaged = limiter is not None and limiter.engaged
        # A process standing aside engages no fleet; a fleet that paces hears every 429 all the
        # same: it judges for itself whether its rate is what they depend on.
        if not (engaged or self.local.pacing_tokens() or self.fleet_paces()):
            return
        with self._lock:
            self._news[2] += 1
            gate = shared_gate(retry_after, self._learn(headers), self.max_gate)
            if gate is not None:
                self._gate_until = max(self._gate_until or 0.0, now + gate)
        self._fleet.wake()

    def answered(self, now: float, headers: Mapping[str, str] | None) -> None:
        self.local.answered(now, headers)
        with self._lock:  # counted always: the fleet's success rate is what a 429 lowers to
            self._news[3] += 1
            if self._engaged_until > now:
                self._learn(headers)

    def _learn(self, headers: Mapping[str, str] | None) -> float | None:
        """Keep the answer's header rates for the next report; its request rate, if any."""
        if headers is None:
            return None
        hinted = refill_rate(headers)
        self._hinted = hinted or self._hinted
        self._tokens_hinted = token_refill(headers) or self._tokens_hinted
        return hinted

    # -- what the reporter asks -------------------------------------------------------------------

    def take_report(self, now: float) -> Sequence[float] | None:
        """What happened since the last report, as the ``REPORT`` script's arguments; ``None``
        when nothing did (an endpoint not used costs nothing)."""
        with self._lock:
            news, self._news = self._news, [0, 0, 0, 0, 0, 0, 0, 0]
            gate, self._gate_until = self._gate_until, None
            hinted, self._hinted = self._hinted, None
            tokens, self._tokens_hinted = self._tokens_hinted, None
        if not any(news):
            return None
        sent, retried, throttled, succeeded, excess, token_throttled, through, counted = news
        gate_ms = -1.0 if gate is None else max(0.0, gate - now) * 1000
        token_rate, token_burst = tokens if tokens is not None else (-1.0, 0)
        return (sent, retried, throttled, gate_ms, hinted or -1.0, succeeded, token_rate,
                token_burst, excess, token_throttled, through, counted)  # fmt: skip

    def after_fork(self) -> None:
        """A forked child is a process starting: it joins the fleet anew."""
        self._lock = threading.Lock()
        self._joining = False
        self._joined = threading.Event()
        self._answered = None

    def apply_report(self, reply: object, now: float) -> None:
        if not isinstance(reply, list) or len(reply) != 6:
            raise ValueError(f"unexpected reply from Redis: {type(reply).__name__}")
        engaged_ms, requests, retries, _, independent_ms, tokens_apart_ms = (
            int(value) for value in reply
        )
        self._heard(engaged_ms, now)
        tokens = self.local.tokens
        if tokens is not None and (tokens_apart_ms > 0 or self._tokens_apart):
            # The fleet judged its tokens not what the 429s depend on: this process does not
            # find a rate of its own meanwhile, for as long as it hears that verdict.
            held = min(tokens_apart_ms / 1000, TOKEN_VERDICT_HELD)
            tokens.hear_fleet_verdict(now, now + held)
        self._tokens_apart = tokens_apart_ms > 0
        self._totals = (requests, retries, now)
        if independent_ms > 0 and self._independent_until <= now:
            # The fleet judged, from all its processes' answers, that slowing does not help:
            # this process's limiter, whose own trial judged the fleet's schedule, stands
            # aside too (once per verdict: its own watch may end that, as alone).
            limiter = self.local.limiter
            if limiter is not None:
                limiter.stand_aside(now)
        self._independent_until = now + independent_ms / 1000 if independent_ms > 0 else 0.0
