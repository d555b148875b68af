"""The run a ``stream`` / ``astream`` call starts, caught as LangChain starts it.

Generate paths hand the run manager to the code beneath them; a chat model's ``stream`` and
``astream`` do not: they create it (``on_chat_model_start``) and then call ``_stream`` /
``_astream`` without it. So the bridge opens a :class:`StreamRun` around each step of the stream,
and the callback manager's start method binds the run it creates to the open one, before the
SDK call that the run's observer will watch starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from .._internal import guarded
from ._listener import AnyRunManager, running_under

__all__ = ["StreamRun", "bind_started_run"]

_open: ContextVar[StreamRun | None] = ContextVar("otel_openai_retry_lc_stream", default=None)


class StreamRun:
    """One ``stream``/``astream`` call's run: unknown when the call begins, bound when started."""

    __slots__ = ("run_manager",)

    def __init__(self) -> None:
        self.run_manager: AnyRunManager | None = None

    def bind(self, run_manager: AnyRunManager) -> None:
        """The first run started inside the stream is the stream's own; later ones are nested."""
        if self.run_manager is None:
            self.run_manager = run_manager

    @contextmanager
    def step(self) -> Iterator[None]:
        """Open for one step of the stream: runs started now bind, SDK calls report here."""
        token = _open.set(self)
        try:
            with running_under(self):
                yield
        finally:
            _open.reset(token)


@guarded
def bind_started_run(run_managers: Sequence[AnyRunManager]) -> None:
    """Called with what a callback manager's start method returned: bind it to the open stream.

    A stream starts exactly one run; a start that returns several is a batch, not this stream's.
    """
    run = _open.get()
    if run is not None and len(run_managers) == 1:
        run.bind(run_managers[0])
