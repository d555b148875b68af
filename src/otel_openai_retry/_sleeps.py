"""How the retry loop waits: for real, or, in a test that asked for it, not at all.

A test of retry behaviour should not take the seconds a server's ``Retry-After`` asks for, yet it
should still see that they were asked for and honoured. With :func:`set_testing` on, every wait
of the loop (the sleep before a retry, a pacing wait) returns at once, while its duration is
decided and recorded exactly as in production: ``openai_retry.sleep``, ``openai_retry.total_sleep``
and the ``retry_delay`` metric say what would have been slept. The idea is stamina's
``set_testing``.

The switch is read at each wait, so it works whenever it is flipped, before or after
instrumenting. An async wait still passes through the loop (``anyio.sleep(0)``), so a
cancellation still lands there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

__all__ = ["CountedSleep", "async_sleep", "is_testing", "set_testing", "sync_sleep"]

_instant = False


def set_testing(testing: bool) -> None:
    """Make the retry loop's waits instant (``True``) or real again (``False``), process-wide.

    For tests only: the waits are still decided, and recorded in spans and metrics, as in
    production; only the time does not pass. The ``openai_retry_telemetry`` and ``fake_openai``
    fixtures of the pytest plugin turn it on for their test and restore it after.
    """
    global _instant  # noqa: PLW0603 - one process-wide switch, as stamina's
    _instant = bool(testing)


def is_testing() -> bool:
    """Whether :func:`set_testing` made the waits instant."""
    return _instant


async def async_sleep(seconds: float) -> None:
    """The running loop's own sleep (asyncio, uvloop or trio, through anyio)."""
    await anyio.sleep(0 if _instant else seconds)


def sync_sleep(seconds: float) -> None:
    if not _instant:
        time.sleep(seconds)


class CountedSleep:
    """Around a sleep of the retry loop: ``count`` is told the time slept, all of it, or what
    passed before a cancel (a call's ``openai_retry.total_sleep`` is what it really slept)."""

    __slots__ = ("_count", "_seconds", "_started")

    def __init__(self, seconds: float, count: Callable[[float], None]) -> None:
        self._seconds, self._count = seconds, count
        self._started = time.monotonic()

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        taken = self._seconds if exc_type is None else time.monotonic() - self._started
        self._count(min(self._seconds, taken))
