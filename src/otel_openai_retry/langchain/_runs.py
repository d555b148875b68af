"""The run a ``stream`` / ``astream`` call starts, caught as LangChain starts it.

Generate paths hand the run manager to the code beneath them; a chat model's ``stream`` and
``astream`` do not: they create it (``on_chat_model_start``) and then call ``_stream`` /
``_astream`` without it. So the bridge opens a :class:`StreamRun` around each step of the stream,
the callback manager's start method binds the run it creates to the open one, and the listener
made current for the step consults it when a retry happens, which is after the binding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import tenacity
from opentelemetry.util.types import AttributeValue

from .._hooks import RetryListener, listening
from .._internal import guarded
from .._loop import RetryDetails
from ._listener import AnyRunManager, listener_for

__all__ = ["StreamRun", "bind_started_run"]

_open: ContextVar[StreamRun | None] = ContextVar("otel_openai_retry_lc_stream", default=None)


class StreamRun:
    """One ``stream``/``astream`` call's run: unknown when the call begins, bound when started."""

    __slots__ = ("_bound", "listener")

    def __init__(self) -> None:
        self._bound: RetryListener | None = None
        # Forwards to the bound run; the span attributes are read when each SDK call starts.
        self.listener = RetryListener(
            on_retry_async=self._on_retry_async,
            on_retry_sync=self._on_retry_sync,
            span_attributes=_BoundAttributes(self),
        )

    def bind(self, run_manager: AnyRunManager) -> None:
        """The first run started inside the stream is the stream's own; later ones are nested."""
        if self._bound is None:
            self._bound = listener_for(run_manager)

    @contextmanager
    def step(self) -> Iterator[None]:
        """Open for one step of the stream: runs started now bind, SDK calls report here."""
        token = _open.set(self)
        try:
            with listening(self.listener):
                yield
        finally:
            _open.reset(token)

    async def _on_retry_async(self, details: RetryDetails, state: tenacity.RetryCallState) -> None:
        bound = self._bound
        if bound is not None and bound.on_retry_async is not None:
            await bound.on_retry_async(details, state)

    def _on_retry_sync(self, details: RetryDetails, state: tenacity.RetryCallState) -> None:
        bound = self._bound
        if bound is not None and bound.on_retry_sync is not None:
            bound.on_retry_sync(details, state)


class _BoundAttributes(Mapping[str, AttributeValue]):
    """Empty until the run is bound, then the bound run's span attributes."""

    __slots__ = ("_run",)

    def __init__(self, run: StreamRun) -> None:
        self._run = run

    def _current(self) -> Mapping[str, AttributeValue]:
        bound = self._run._bound
        return bound.span_attributes if bound is not None else {}

    def __getitem__(self, key: str) -> AttributeValue:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


@guarded
def bind_started_run(run_managers: Sequence[AnyRunManager]) -> None:
    """Called with what a callback manager's start method returned: bind it to the open stream.

    A stream starts exactly one run; a start that returns several is a batch, not this stream's.
    """
    run = _open.get()
    if run is not None and len(run_managers) == 1:
        run.bind(run_managers[0])
