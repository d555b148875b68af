"""What the retry loop tells, and who is told: a tuple of observers per logical call.

The loop tells every observer of a call the same things, in order: how a paced attempt's wait for
its send slot went, an attempt started, it succeeded or failed, a retry is about to sleep, the
call is over. Spans and metrics are the first
observer of every call; the others come from factories registered here (users' retry hooks, the
LangChain bridge), each asked once per call whether it wants to watch this one. So the core knows
no integration by name, and an integration that is not registered costs nothing.

An observer may put attributes on the logical span (read once, before the span starts) and may
return an awaitable from :meth:`Observer.retrying`, which an async call awaits before it sleeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import tenacity

from ._decisions import Outcome, Verdict
from ._hooks import RetryDetails
from ._internal import report_internal_error
from ._semconv import ATTEMPTS, OUTCOME, TOTAL_SLEEP, TOTAL_THROTTLE

if TYPE_CHECKING:  # the loop stays free of OpenTelemetry at run time
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "CallObserver",
    "CallSummary",
    "Observer",
    "ObserverFactory",
    "add_observer_factory",
    "observers_for_call",
    "remove_observer_factory",
]


@dataclass(frozen=True, slots=True)
class CallSummary:
    """How a logical call ended."""

    outcome: Outcome
    attempts: int
    total_sleep: float
    total_throttle: float = 0.0
    """Seconds the call's attempts waited for pacing slots."""

    def attributes(self) -> dict[str, AttributeValue]:
        """The retry summary, as it goes on the call's span (ours, or a peer's)."""
        attributes: dict[str, AttributeValue] = {
            ATTEMPTS: self.attempts,
            TOTAL_SLEEP: self.total_sleep,
            OUTCOME: self.outcome.value,
        }
        if self.total_throttle > 0:
            attributes[TOTAL_THROTTLE] = self.total_throttle
        return attributes


class CallObserver(Protocol):
    """Told about one logical call as it runs."""

    def paced(self, result: str, waited: float) -> None:
        """Before an attempt of an endpoint being paced: how its wait for a send slot went
        (``acquired``, ``delayed``, ``rejected`` past the deadline, or ``canceled``)."""
        ...

    def attempt_started(self, attempt: int, throttle: float) -> None: ...

    def attempt_succeeded(self, attempt: int, result: Any) -> None: ...

    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None: ...

    def retrying(
        self, details: RetryDetails, retry_state: tenacity.RetryCallState
    ) -> Awaitable[object] | None:
        """Before the sleep; ``retry_state`` still describes the attempt that failed."""
        ...

    def finished(self, summary: CallSummary, exc: BaseException | None) -> None: ...


_NO_ATTRIBUTES: Mapping[str, AttributeValue] = {}


class Observer:
    """An observer that ignores everything: subclass it and override what you watch."""

    span_attributes: Mapping[str, AttributeValue] = _NO_ATTRIBUTES
    """Put on the logical span when it starts."""

    def paced(self, result: str, waited: float) -> None:
        pass

    def attempt_started(self, attempt: int, throttle: float) -> None:
        pass

    def attempt_succeeded(self, attempt: int, result: Any) -> None:
        pass

    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None:
        pass

    def retrying(
        self, details: RetryDetails, retry_state: tenacity.RetryCallState
    ) -> Awaitable[object] | None:
        return None

    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        pass


ObserverFactory = Callable[[bool], Observer | None]
"""Asked once per logical call (``True`` for an async one): an observer for it, or ``None``."""


class _Registered:
    factories: tuple[ObserverFactory, ...] = ()


def add_observer_factory(factory: ObserverFactory) -> None:
    if factory not in _Registered.factories:
        _Registered.factories = (*_Registered.factories, factory)


def remove_observer_factory(factory: ObserverFactory) -> None:
    _Registered.factories = tuple(f for f in _Registered.factories if f != factory)


def observers_for_call(is_async: bool) -> tuple[Observer, ...]:
    """The registered observers that want to watch a call starting now."""
    factories = _Registered.factories
    if not factories:
        return ()
    found = []
    for factory in factories:
        try:
            observer = factory(is_async)
        except Exception:  # an integration's bug costs its own observer, never the call
            report_internal_error("observer factory")
            continue
        if observer is not None:
            found.append(observer)
    return tuple(found)
