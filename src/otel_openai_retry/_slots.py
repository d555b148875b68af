"""Taking a send slot from an endpoint's guard, the one step the sync and async drivers share:
the call's tokens estimated only while the guard paces tokens (a clean call pays nothing for
them), and, while sends are paced, how the queue answered, for the pacing metrics; then what the
answer says it cost."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._endpoints import EndpointGuard
from ._internal import report_internal_error

__all__ = ["TokenCost", "correct_tokens", "take_slot", "take_slot_async"]


class TokenCost(Protocol):
    """What one call's request costs in tokens; asked only while its endpoint paces tokens."""

    def estimate(self) -> int:
        """Before a send: the tokens the server charges it before answering."""

    def used(self, result: object) -> int | None:
        """What the answer ``result`` says it cost, if it says."""

    def used_later(self, charge: Callable[[int], None]) -> None:
        """An answer that is read later (a stream): ``charge`` what it says it cost once it has
        been read, if it says."""


def take_slot(
    guard: EndpointGuard, now: float, latest: float, cost: TokenCost | None = None
) -> tuple[float | None, str | None, int]:
    """The wait for a send slot (see :meth:`EndpointGuard.slot_delay`: negative, ask again after
    it); while sends are paced, how the queue answered: ``acquired`` at once, ``delayed``, or
    ``rejected`` (the slot would come after ``latest``); and the tokens reserved, estimated only
    while tokens are paced."""
    paced = guard.pacing()
    if not paced and not guard.pacing_tokens():  # no queue, no tokens: the common case, in brief
        return guard.slot_delay(now, latest, 0), None, 0
    tokens = _tokens(guard, cost)
    return _queue_result(paced, guard.slot_delay(now, latest, tokens), tokens)


async def take_slot_async(
    guard: EndpointGuard, now: float, latest: float, cost: TokenCost | None = None
) -> tuple[float | None, str | None, int]:
    """:func:`take_slot` for a guard whose slot is a round trip away (see ``shared_slot``)."""
    tokens = _tokens(guard, cost)
    return _queue_result(guard.pacing(), await guard.aslot_delay(now, latest, tokens), tokens)


def _tokens(guard: EndpointGuard, cost: TokenCost | None) -> int:
    return cost.estimate() if cost is not None and guard.pacing_tokens() else 0


def _queue_result(
    paced: bool, delay: float | None, tokens: int
) -> tuple[float | None, str | None, int]:
    if delay is None:
        return None, "rejected" if paced else None, 0
    # Negative: no slot booked yet (ask again), so no tokens reserved either.
    booked = tokens if delay >= 0 else 0
    return delay, ("acquired" if delay == 0 else "delayed") if paced else None, booked


def correct_tokens(
    guard: EndpointGuard, cost: TokenCost | None, reserved: int, result: Any, booked: float
) -> None:
    """The answer's usage, where above the ``reserved`` estimate, charged to the guard.
    ``booked``: when its attempt's slot was taken. An answer that does not say what it cost now
    (a stream, whose usage comes with its last chunk if the caller asked for it; a body without
    usage) counts at its estimate: a token rate found from the answers must see every success.
    A stream's usage above that is charged once it has been read."""
    try:
        if cost is None:
            return
        used = cost.used(result)
        if used is not None:
            guard.tokens_used(time.monotonic(), reserved, used, booked)
        else:
            guard.tokens_used(time.monotonic(), reserved, reserved, booked)
            cost.used_later(functools.partial(_charge, guard, reserved, booked))
    except Exception:
        report_internal_error("token usage")


def _charge(guard: EndpointGuard, reserved: int, booked: float, used: int) -> None:
    try:
        guard.tokens_used(time.monotonic(), reserved, used, booked, counted=True)
    except Exception:
        report_internal_error("token usage")
