"""Pacing by tokens for one endpoint, engaged once the server said a token limit was hit.

OpenAI limits tokens per minute as well as requests: a few long prompts exhaust the token bucket
while the request bucket is nearly full, and pacing requests alone either lets them through (429)
or, slowed until they pass, starves the short ones. So, once a 429 says ``type: tokens`` and the
headers (``x-ratelimit-{limit,remaining,reset}-tokens``, on that 429 or learnt before) give the
token rate, every send reserves its estimated tokens from a schedule that drains as the server's
bucket does: a GCRA (the token bucket's virtual-time form), with the server's rate (slightly
under, as for requests) and the bucket's size as its capacity. A send goes at the later of its
request slot and its token slot; an answer that used more than its estimate adds the difference
(one that used less gives nothing back: the server charged the estimate).

The bucket is also kept in step with the server's view: an answer's ``remaining-tokens`` never
leaves the schedule fuller than the server says it is (other processes share the limit). When no
header states the token rate, it is found from the answers (``_token_learning``); if slowing
our tokens did not make those 429s fall, nothing paces them for ``INDEPENDENT_HOLD`` (or until
they stop for ``DISENGAGE_AFTER``). Like request pacing it switches itself off after
``DISENGAGE_AFTER`` seconds with no token 429 and no one delayed, and no slot is ever more than
``max_gate`` away.

Pure state and arithmetic, the clock passed in; one lock makes it safe across threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from ._pacing_evidence import INDEPENDENT_HOLD, rose
from ._pacing_trial import DISENGAGE_AFTER
from ._rate_headers import read_limit
from ._token_learning import LEARNT_BURST, TokenRateFinder

__all__ = ["TokenPacer", "remember_refused"]

HINT_MARGIN = 0.98
"""Reserve slightly under the rate the headers announce, for clock and latency noise."""
REFUSED_REMEMBERED = 256
"""Sizes of refused long sends remembered at most, the oldest forgotten first (each asks again
within its backoff, unless its call gave up)."""
REFUSED_SPAN = 0.5
"""Seconds of a found rate a refused long send asks for at most: a send beyond what the
server's bucket can ever hold (unknown) must not hold everyone back for longer."""
MIN_TOKEN_RATE = 1.0
"""Tokens per second never paced below, so that a wrong header cannot stall an endpoint."""
WATCH_MIN_ANSWERS = 100
"""Unpaced answers the watch while standing aside judges on at least: it looks again at every
answer, and each look is a chance for noise to pass the test."""


def remember_refused(refused: dict[int, None], tokens: int) -> None:
    """Remember the size of a send the token limit refused, so that asking again it books all of
    its tokens. The oldest size is forgotten first: a call that gave up never asks again, and its
    size must not keep a later long send from being remembered."""
    refused.pop(tokens, None)
    if len(refused) >= REFUSED_REMEMBERED:
        del refused[next(iter(refused))]
    refused[tokens] = None


class TokenPacer:
    """The token schedule of one endpoint."""

    __slots__ = (
        "_aside_until",
        "_booked_since",
        "_finder",
        "_last_delay",
        "_last_throttled",
        "_lock",
        "_max_gate",
        "_rate_before",
        "_rate_since",
        "_refused",
        "_tat",
        "_watch",
        "_watched_against",
        "capacity",
        "engaged",
        "rate",
    )

    def __init__(self, *, max_gate: float) -> None:
        self.engaged = False
        """Read without the lock: a call checks it before estimating its tokens."""
        self.rate = 0.0
        """Tokens per second; 0 until headers gave one or the answers showed one."""
        self.capacity = 0.0
        self._tat = 0.0
        """The schedule's theoretical arrival time: when the bucket would be full again."""
        self._rate_since = -math.inf
        """When the first rate, or a rate found (not the measuring phase's brake, which follows
        each success), began: a send booked before took its time at ``_rate_before``."""
        self._rate_before = 0.0
        """The rate before ``_rate_since``."""
        self._booked_since = -math.inf
        """When the first rate began: before it, nothing was booked."""
        self._max_gate = max_gate if math.isfinite(max_gate) and max_gate >= 0 else 0.0
        self._last_throttled = -math.inf
        self._last_delay = -math.inf
        self._finder: TokenRateFinder | None = None
        """Without a header rate: the rate found from the answers."""
        self._aside_until = -math.inf
        """Until then token 429s without a stated rate pace nothing: slowing did not help."""
        self._watch: list[int] | None = None
        """While standing aside: the 429s and answers since (see :meth:`_watch_aside`)."""
        self._watched_against = (0, 0)
        """The paced 429s and answers the verdict to stand aside was reached on."""
        self._refused: dict[int, None] = {}
        """Sizes of sends larger than a found schedule's size that the token limit refused: the
        same send asking again (its estimate is the same) reserves all of its tokens."""
        self._lock = threading.Lock()

    @property
    def finding(self) -> bool:
        """Whether the token rate is being found from this process's own answers."""
        return self._finder is not None

    @property
    def stated(self) -> bool:
        """Whether the headers stated the token rate (the one a whole fleet can pace by)."""
        return self.rate > 0 and self._finder is None

    def reserve(self, now: float, tokens: int, earliest: float, latest: float) -> float | None:
        """Reserve ``tokens`` at the first moment from ``earliest`` (the request slot) that the
        bucket holds them; the wait from ``now``. ``None`` when that is at or after ``latest``
        (the caller's deadline), and then nothing is reserved."""
        if not self.engaged:
            return earliest - now
        with self._lock:
            if (
                now - self._last_throttled > DISENGAGE_AFTER
                and now - self._last_delay > DISENGAGE_AFTER
            ):
                self._disengage()
                return earliest - now
            rate, capacity = self.rate, self.capacity
            if rate <= 0:  # the rate is being measured: nothing held back by tokens yet
                return earliest - now
            cost = min(float(tokens), capacity)
            if tokens > capacity and tokens in self._refused:
                cost = min(float(tokens), rate * REFUSED_SPAN)
            start = max(earliest, self._tat - (capacity - cost) / rate)
            if start >= latest:
                return None
            delay = start - now
            if delay > self._max_gate:  # never: the cap, and the schedule left as it was
                self._refused.pop(tokens, None)
                self._last_delay = now
                return self._max_gate if now + self._max_gate < latest else None
            if cost > capacity:
                self._refused.pop(tokens, None)
            # A send larger than the schedule's size waited for its tokens beyond it: it leaves
            # the bucket empty, not in debt.
            self._tat = max(self._tat + cost / rate, start + min(cost, capacity) / rate)
            if start - earliest > 0.001:
                self._last_delay = now
            return delay

    def refund(self, now: float, reserved: int, short: bool, booked: float | None = None) -> None:
        """A send that booked ``reserved`` tokens at a rate found from the answers (its slot
        taken at ``booked``, if known) was answered 429. While that rate is measured and tried,
        the schedule gives them back (the server admitted none of them; kept, 429s that do not
        depend on our tokens would hold sends back before the verdict): the time they took at
        the rate they were booked at. A send booked at the measuring phase's brake, faster than
        the trial, took less of the schedule than it would give back at the trial's rate, and
        before the first rate nothing was booked at all (given back at the rate of the moment,
        the sends refused before a trial kept its schedule full: the server got its limit, not
        the trial's rate, which then seemed not to matter). Once it is settled, it does not
        give them back: the schedule runs a little over the server's then, and what stays
        booked is the margin a long prompt needs to get through (given back, long prompts met
        429 after 429 while short ones took the tokens).
        ``short``: the token limit refused it, so the server's bucket holds fewer than that
        now; the schedule is made to hold half of it at most (the same send again waits for the
        other half). A send larger than the found schedule's size (a guess, far under the
        server's bucket) is capped to that size like any other; refused, it is remembered, and
        asking again it reserves all of its tokens (``REFUSED_SPAN`` of the rate at most, and
        forgotten once its wait would pass the cap), so that short sends do not take them first
        each time it waits (long prompts ran out of attempts so). At a header's rate nothing
        changes: the headers say how full the bucket is, and processes pacing alone that gave
        tokens back sent more into a shared limit."""
        if self._finder is None or not self.engaged:
            return
        with self._lock:
            finder = self._finder
            if finder is None or self.rate <= 0:  # switched off meanwhile, by another thread
                return
            cost = min(float(reserved), self.capacity)
            if booked is None or booked >= self._rate_since:
                then = self.rate
            else:
                then = self._rate_before if booked >= self._booked_since else 0.0
            tat = self._tat if finder.settled or then <= 0 else max(now, self._tat - cost / then)
            if short:
                tat = max(tat, now + (self.capacity - cost / 2) / self.rate)
                if reserved > self.capacity:
                    remember_refused(self._refused, reserved)
            self._tat = tat

    def used(
        self,
        now: float,
        reserved: int,
        used: int,
        booked: float | None = None,
        counted: bool = False,
    ) -> None:
        """An answer's usage is known: while the rate is found from the answers, its tokens are
        counted (``counted``: the answer was, at its estimate, and only usage above it is
        added); usage above the reservation is charged to the schedule, taken from what the
        bucket holds now (a schedule that fell behind ``now`` stands for a full bucket). Less
        gives nothing back: OpenAI's limiter charges its estimate (the output allowed, not the
        output produced) at admission, so a refund would send tokens the server has not got,
        and 429s follow."""
        if not self.engaged:
            return
        with self._lock:
            finder = self._finder
            if finder is not None:
                if not counted:
                    finder.succeeded(now, max(reserved, used), booked)
                elif used > reserved:
                    finder.charged(now, used - reserved, booked)
                self._follow(now, finder)
            if self.rate > 0 and used > reserved:
                excess = min(used, self.capacity) - min(reserved, self.capacity)
                self._tat = max(self._tat, now) + excess / self.rate

    def on_success(self, now: float, headers: Mapping[str, str] | None) -> None:
        if not self.engaged:
            if self._watch is not None:
                with self._lock:
                    self._watch_aside(now, throttled=False)
            return
        with self._lock:
            if headers is not None:
                self._learn(now, headers)
            finder = self._finder
            if finder is not None:
                finder.answered(now, throttled=False)
                self._stand_aside_if_judged(now, finder)

    def on_throttled(
        self, now: float, headers: Mapping[str, str] | None, booked: float | None = None
    ) -> None:
        """A 429 said a token limit was hit (to a send whose slot was taken at ``booked``, if
        known): pace tokens at the headers' rate, or at one found from the answers; or, judged
        not to depend on our tokens, let it be."""
        with self._lock:
            if headers is not None:
                self._learn(now, headers)
            if self.rate > 0 and self._finder is None:  # the headers' rate
                self._last_throttled = now
                self.engaged = True
                return
            if now < self._aside_until and now - self._last_throttled <= DISENGAGE_AFTER:
                self._last_throttled = now
                if not self._watch_aside(now, throttled=True):
                    return  # judged not ours to slow for
            self._watch = None
            finder = self._finder
            if finder is None:
                finder = self._finder = TokenRateFinder(now)
                self._tat = now
                self.engaged = True
            self._last_throttled = now
            finder.answered(now, throttled=True)
            finder.throttled(now, booked, MIN_TOKEN_RATE)
            self._follow(now, finder)
            self._stand_aside_if_judged(now, finder)

    def yield_to_fleet(self) -> None:
        """Another schedule (the fleet's) paces these tokens: what this process found or judged
        from answers to sends it did not pace (its trial's verdict, that they do not depend on
        them) is dropped, and it finds afresh if it paces alone again (a Redis outage left its
        calls unpaced so)."""
        with self._lock:
            self._aside_until, self._watch = -math.inf, None
            if self._finder is not None:
                self._disengage()

    def hear_fleet_verdict(self, now: float, until: float) -> None:
        """The fleet's verdict on its tokens, as a report heard it. Judged not what the token
        429s depend on (``until`` ahead): this process finds no rate of its own until then,
        in place of any verdict of its own (slowing alone, it would see the others' keep the
        429s coming, and lose its time to a trial; the fleet, not this process, watches for a
        rise of them). Withdrawn (``until`` not ahead): it judges for itself again at once. A
        header's rate is the server's word, and stays."""
        with self._lock:
            if self.stated:
                return
            self._watch = None
            self._aside_until = until if until > now else -math.inf
            if until > now:
                if self._finder is not None:
                    self._disengage()
                self._last_throttled = max(self._last_throttled, now)

    def _follow(self, now: float, finder: TokenRateFinder) -> None:
        rate = finder.provisional if finder.measuring else finder.rate
        if rate > 0:
            if self.rate <= 0:  # the first rate: the server's bucket is drained, ours starts so
                self._tat = max(self._tat, now + LEARNT_BURST)
                self._booked_since = self._rate_since = now  # nothing was booked before it
            elif rate != self.rate and not finder.measuring:
                self._rate_since, self._rate_before = now, self.rate  # booked at the brake's
            self.rate = rate
            self.capacity = rate * LEARNT_BURST

    def _stand_aside_if_judged(self, now: float, finder: TokenRateFinder) -> None:
        """The finder judged that our tokens are not what the 429s depend on: no token pacing
        (and no request pacing for them) until ``_aside_until``."""
        if finder.aside:
            self._watch, self._watched_against = [0, 0], finder.judged_on
            self._disengage()
            self._aside_until = now + INDEPENDENT_HOLD

    def _watch_aside(self, now: float, throttled: bool) -> bool:
        """Standing aside, an answer to an unpaced send: whether its 429s are now clearly more
        frequent than the paced answers the verdict was reached on were. Then slowing did help
        (a trial run near a limit it overstated, which left 429s that fell too little): the
        verdict is withdrawn, and pacing engages at once to find the rate again, with no trial
        verdict to stand aside on (the watch after the trial still withdraws it, should the
        429s not fall as the rate is lowered). 429s that do not depend on our tokens come as
        often unpaced as paced."""
        watch = self._watch
        if watch is None:
            return False
        if now >= self._aside_until:
            self._watch = None
            return False
        watch[0] += throttled
        watch[1] += 1
        if watch[1] < WATCH_MIN_ANSWERS or not rose(*self._watched_against, *watch):
            return False
        self._watch, self._aside_until = None, -math.inf
        self._finder = TokenRateFinder(now, proven=True)
        self._tat, self.engaged = now, True
        return True

    def _disengage(self) -> None:
        self.engaged = False
        self._refused.clear()
        if self._finder is not None:  # a rate found from answers is found afresh next time
            self._finder = None
            self.rate = self.capacity = 0.0

    def _learn(self, now: float, headers: Mapping[str, str]) -> None:
        """The rate and the bucket's size from the headers, and no more tokens in our schedule
        than the server says remain. Only headers that give a rate of their own are read: a size
        or a fill measured against a rate from other headers could put the schedule anywhere."""
        found = read_limit(headers, "tokens")
        if found is None or found.rate is None:
            return
        self._finder = None  # the server's word over what the answers suggested
        self._refused.clear()
        self.rate = max(MIN_TOKEN_RATE, found.rate * HINT_MARGIN)
        self.capacity = float(found.limit)
        self._tat = max(self._tat, now + (found.limit - found.remaining) / self.rate)
