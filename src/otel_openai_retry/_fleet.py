"""The connection to a fleet's Redis, and how its failure is survived.

Redis is an optimisation of pacing, never a dependency of a call: a caller's round trip has a
timeout of ``ROUND_TRIP_TIMEOUT`` and no retry, and the first failure (refused, a script error, a
key of the wrong type, a reply of the wrong shape; or ``STRIKES`` time-outs in a row) switches
every endpoint to its per-process guard, with one warning. Only the reporter thread tries Redis
again, every ``reconnect_every`` seconds, so a dead Redis costs callers nothing; its first good
reply shares again, with fresh connections.

Callers do one kind of round trip, a slot reservation, and only while the fleet paces their
endpoint (or once per endpoint, to join it): with the sync client from a sync call; from an async
one, with a client of its own run in one of the fleet's threads and awaited (never blocking I/O
inside an event loop). Not an asyncio client: its connections would be opened on the caller's
loop, within the caller's round-trip timeout, which a loop busy starting a crowd of calls misses
every time. No asyncio loop, as under trio, means local pacing. Everything else (counts for the
budget, 429s and header rates for the schedule, whether the fleet paces an endpoint at all) goes
through the reporter thread, so an endpoint that is not paced costs no round trip per call.

redis-py is imported here only, and this module only when a Redis URL is configured.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._fleet_reporter import ReportChannel, Reporting, report_loop
from ._fleet_scripts import REPORT_SPAN, RESERVE
from ._internal import logger

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = ["REPORT_EVERY", "ROUND_TRIP_TIMEOUT", "Fleet", "Reservation"]

ROUND_TRIP_TIMEOUT = 0.05
"""Seconds a caller's round trip (or its connection) may take: past it, the caller's slot is
its process's own. It bounds what Redis can add to a paced call (which waits for its slot
anyway); an async call's timer also counts its event loop's own lag."""
STRIKES = 3
"""Round trips in a row past the timeout before Redis counts as down (one late answer on a busy
machine is not an outage); any other failure counts at once."""
REPORT_TIMEOUT = 1.0
"""The same for the reporter thread, which no caller waits for: a busy Redis (or machine) that
answers in tens of milliseconds is not down."""
SLOT_THREADS = 4
"""Threads booking async calls' slots (a reservation takes a fraction of a millisecond)."""
RECONNECT_EVERY = 3.0
REPORT_EVERY = REPORT_SPAN / 1000
"""Seconds between reports of a used endpoint: how soon the fleet's pacing reaches a process
that has not seen a 429 itself, and how stale the fleet's budget counts may be."""


class Fleet:
    """One Redis shared by every endpoint of one instrumentation."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = ROUND_TRIP_TIMEOUT,
        reconnect_every: float = RECONNECT_EVERY,
        report_every: float = REPORT_EVERY,
    ) -> None:
        self._timeout = timeout
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        self._url = url
        self._client: redis.Redis = self._connect(redis.Redis, "slot-sync")
        self._channel = ReportChannel(self._connect(redis.Redis, "report", REPORT_TIMEOUT))
        self._reserve: Script = self._client.register_script(RESERVE)
        self._slot_client: redis.Redis = self._connect(redis.Redis, "slot-thread")
        self._threaded: Script = self._slot_client.register_script(RESERVE)
        self._threads = ThreadPoolExecutor(SLOT_THREADS, "otel-openai-retry-slot")
        kwargs = self._client.get_connection_kwargs()
        self.where = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")
        """Where Redis is, for messages: never the URL, which may hold a password."""
        self.up = True
        self._strikes = 0
        self._struck_at = -1.0
        self._retry_at = 0.0
        self._reconnect_every = reconnect_every
        self.report_every = report_every
        self._guards: weakref.WeakSet[Reporting] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        self.closed = False
        self._thread: threading.Thread | None = None
        _FLEETS.add(self)

    def _connect(self, kind: Any, role: str, timeout: float | None = None) -> Any:
        """A client with our timeouts, whatever the URL's query says (``socket_timeout=5``
        there would make every paced call wait up to 5 s for a Redis that hangs), named for
        its role in ``CLIENT LIST``."""
        options = {**self._options, "client_name": f"otel-openai-retry:{role}"}
        if timeout is not None:
            options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
        client = kind.from_url(self._url, **options)
        client.connection_pool.connection_kwargs.update(options)
        return client

    # -- callers -------------------------------------------------------------------------------

    def reserve(self, key: str, args: Sequence[float]) -> Reservation | None:
        """A slot from the sync client; ``None`` when Redis failed (the caller paces locally)."""
        try:
            reply = _reservation(self._reserve(keys=[key], args=list(args)))
        except Exception as exc:  # whatever Redis does, the call goes on
            self._struck(exc)
            return None
        self._strikes = 0
        return reply

    async def reserve_async(self, key: str, args: Sequence[float]) -> Reservation | None:
        """A slot booked from one of the fleet's threads, awaited for a round trip's time at
        most; ``None`` under another event loop (trio) or when Redis failed."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        booked = loop.run_in_executor(self._threads, self._book, key, args)
        try:
            reply = await asyncio.wait_for(booked, self._timeout)
        except Exception as exc:
            self._struck(exc)
            return None
        self._strikes = 0
        return reply

    def _book(self, key: str, args: Sequence[float]) -> Reservation:
        return _reservation(self._threaded(keys=[key], args=list(args)))

    # -- health ---------------------------------------------------------------------------------

    def _struck(self, exc: Exception) -> None:
        """A caller's round trip failed: down at once, or at the ``STRIKES``-th time out. Time
        outs within one ``ROUND_TRIP_TIMEOUT`` of the last one counted are one strike: callers
        that asked together (a crowd opening its connections on a busy machine) saw one delay."""
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, redis.exceptions.TimeoutError)):
            now = time.monotonic()
            if now - self._struck_at < ROUND_TRIP_TIMEOUT:
                return
            self._struck_at = now
            self._strikes += 1
            if self._strikes < STRIKES:
                return
        self._strikes = 0
        self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            was_up, self.up = self.up, False
            self._retry_at = time.monotonic() + self._reconnect_every
        if was_up:
            logger.warning(
                "otel-openai-retry: Redis at %s failed (%s: %.200s); pacing and the retry budget "
                "are per process until it answers again (tried every %g s)",
                self.where,
                type(exc).__name__,
                exc,
                self._reconnect_every,
            )

    def _recovered(self) -> None:
        with self._lock:
            was_up = self.up
            if not was_up:  # callers' connections opened before the outage are dead: new ones
                self._client.connection_pool.disconnect()
                self._slot_client.connection_pool.disconnect()
            self.up = True
        if not was_up:
            logger.info("otel-openai-retry: Redis at %s answers again: shared pacing", self.where)

    # -- the reporter ---------------------------------------------------------------------------

    def register(self, guard: Reporting) -> None:
        with self._lock:
            self._guards.add(guard)
            if self._thread is None:
                self._start()

    def wake(self) -> None:
        """Report now (a 429: the fleet should pace at once)."""
        self.wakeup.set()

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=report_loop,
            args=(weakref.ref(self),),
            name="otel-openai-retry-redis",
            daemon=True,
        )
        self._thread.start()

    def report(self) -> None:
        """Send every used endpoint's news in one round trip and apply the fleet's answers;
        while Redis is down, drop the news, and try again (an empty report) when it is time."""
        now = time.monotonic()
        with self._lock:
            guards = list(self._guards)
        reports = [(guard, news) for guard in guards if (news := guard.take_report(now))]
        if not self.up and now < self._retry_at:
            return
        if not reports and self.up:
            return
        try:
            replies = self._channel.send(reports)
            for (guard, _), reply in zip(reports, replies, strict=True):
                guard.apply_report(reply, now)
        except Exception as exc:
            self.failed(exc)
            return
        self._recovered()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()
        self._client.close()
        self._slot_client.close()
        self._threads.shutdown(wait=False)
        self._channel.close()

    def _after_fork(self) -> None:
        """In a forked child: the reporter thread did not survive the fork, and a lock it held
        then (the fleet's, or a guard's while it took a report) would never be released."""
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        self._threads = ThreadPoolExecutor(SLOT_THREADS, "otel-openai-retry-slot")
        for guard in list(self._guards):
            guard.after_fork()
        if self._thread is not None and not self.closed:
            self._start()


class Reservation(NamedTuple):
    """The ``RESERVE`` script's answer."""

    wait: int
    """µs, or ``NOT_PACED`` or ``TOO_LATE``."""
    engaged_ms: int
    """Until the fleet stops pacing."""
    booked: bool
    """``False`` with a wait: the slot was beyond the horizon; ask again after the wait."""
    tokens: bool
    """Whether the token rate the fleet found booked the tokens (none then at the process's)."""


def _reservation(reply: object) -> Reservation:
    """The script's reply, or ``ValueError`` (Redis answered something else: a failure)."""
    if not isinstance(reply, list) or len(reply) != 4:
        raise ValueError(f"unexpected reply from Redis: {type(reply).__name__}")
    if not all(isinstance(value, int) for value in reply):
        raise ValueError("unexpected reply from Redis: not integers")
    wait, engaged_ms, booked, tokens = reply
    return Reservation(wait, engaged_ms, booked == 1, tokens == 1)


_FLEETS: weakref.WeakSet[Fleet] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for fleet in list(_FLEETS):
        fleet._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
