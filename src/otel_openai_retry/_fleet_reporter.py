"""The reporter: a background thread per fleet that carries what each process saw to Redis and
brings back what the fleet saw, so that callers never wait for Redis unless their endpoint is
paced. It has a client of its own, with a longer timeout (nobody waits for it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis

from ._fleet_scripts import REPORT, REPORT_CONSTANTS
from ._internal import logger

__all__ = ["REPORT_SPACING", "ReportChannel", "Reporting", "report_loop"]

REPORT_SPACING = 0.02
"""Shortest gap between reports (a burst of 429s wakes the reporter many times)."""


class Reporting(Protocol):
    """What the reporter asks of an endpoint's guard."""

    key: str

    def take_report(self, now: float) -> Sequence[float] | None: ...

    def apply_report(self, reply: object, now: float) -> None: ...

    def after_fork(self) -> None:
        """In a forked child: a lock the reporter held at the fork is new again."""


class _Reported(Protocol):
    """The fleet, as the reporter thread sees it."""

    closed: bool
    wakeup: threading.Event
    report_every: float

    def report(self) -> None: ...


class ReportChannel:
    """The reporter's client and its script: every used endpoint's report in one pipeline."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._sha: str | None = None

    def send(self, reports: list[tuple[Reporting, Sequence[float]]]) -> list[Any]:
        """The script's replies, one per report; with no report, a ping (is Redis back?)."""
        try:
            return self._pipeline(reports)
        except redis.exceptions.NoScriptError:  # Redis restarted, or its scripts were flushed
            self._sha = None
            return self._pipeline(reports)

    def _pipeline(self, reports: list[tuple[Reporting, Sequence[float]]]) -> list[Any]:
        if self._sha is None:
            self._sha = str(self._client.script_load(REPORT))
        pipe = self._client.pipeline(transaction=False)
        for guard, news in reports:
            pipe.evalsha(self._sha, 1, guard.key, *news, *REPORT_CONSTANTS)
        if not reports:
            pipe.ping()
        replies: list[Any] = pipe.execute()
        return replies if reports else []

    def close(self) -> None:
        self._client.close()


def report_loop(ref: Callable[[], _Reported | None]) -> None:
    """Hold the fleet only while reporting, so that a fleet nobody uses can be collected."""
    last = 0.0
    while True:
        fleet = ref()
        if fleet is None or fleet.closed:
            return
        wakeup, every = fleet.wakeup, fleet.report_every
        del fleet
        wakeup.wait(every)
        time.sleep(max(0.0, last + REPORT_SPACING - time.monotonic()))
        wakeup.clear()
        fleet = ref()
        if fleet is None or fleet.closed:
            return
        last = time.monotonic()
        try:
            fleet.report()
        except Exception:  # never let the reporter die: it is what brings sharing back
            logger.exception("otel-openai-retry: Redis reporter failed")
        del fleet
