"""How a caller-side integration (the LangChain bridge) listens to the calls made beneath it.

The integration sets a :class:`RetryListener` in a context variable around the code that calls
the SDK; every logical call started in that context hands each retry to it (awaited before the
sleep on the async path, called on the sync path) and puts its attributes on the logical span.
A context variable, not a registry: concurrent tasks each see their own listener, and nothing
outlives the call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry.util.types import AttributeValue

from ._loop import AsyncRetryHook, RetryHook

__all__ = ["RetryListener", "current_listener", "listening"]


@dataclass(frozen=True, slots=True)
class RetryListener:
    """Hooks and span attributes for the calls made while this listener is current."""

    on_retry_async: AsyncRetryHook | None = None
    on_retry_sync: RetryHook | None = None
    span_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


_listener: ContextVar[RetryListener | None] = ContextVar("otel_openai_retry_listener", default=None)


def current_listener() -> RetryListener | None:
    return _listener.get()


@contextmanager
def listening(listener: RetryListener) -> Iterator[RetryListener]:
    """Make ``listener`` current for the calls made inside the ``with`` block."""
    token = _listener.set(listener)
    try:
        yield listener
    finally:
        _listener.reset(token)
