"""Streams: the logical span of a streaming call ends when the stream does, exactly once.

A call is a stream here when the caller gets its response before the body is read: SSE
(``stream=True``), and ``with_streaming_response`` without ``stream=True``, whose JSON body the
caller reads later. :class:`StreamWatch` decides when such a call is over; ``_stream_hooks``
feeds it events from the SDK and httpx.

Phases (who owns the span) and what ends it:

    PENDING ──arm──▶ ARMED ──an ending──▶ ENDED
       │               ▲ │
       └──begin read─▶ READING ◀┘ (back to the phase it came from when the SDK's read returns)

Endings, the first one wins except that a failure replaces a close not yet told:
CLOSED (the body closed: exhausted, closed early, after the caller's parse), FAILED (an error the
caller saw), ABANDONED (the stream or response was garbage-collected: ``error.type = _OTHER``).

Rules:

1. PENDING: the retry loop owns the span; an ending is remembered, the span stays open.
2. ``arm``: the call returned the stream; PENDING → ARMED, and a remembered ending ends it now.
3. ARMED: the first ending → ENDED.
4. READING (the SDK is inside a chunk's parse or the body's ``parse()``): a close and a read
   error are remembered; when the SDK returns, its own exception is the ending (what the caller
   sees, ``openai.APIConnectionError`` rather than the httpx error), else the remembered read
   error, else the remembered close, else back to the phase it came from.
5. ABANDONED comes from the garbage collector: the SDK can no longer report, so it leaves
   READING too, but it never replaces an ending already remembered.
6. ENDED: every event is ignored; ``on_end`` was called exactly once.
7. Reading the result can never keep the span open: a reader that fails costs the result's
   attributes (an internal error), never the end.

Nothing here retries: once the call has returned the stream, a failure goes to the caller, even
before the first chunk (the bare SDK does not retry that either, and retrying would mean either
holding back the stream until its first chunk or swapping the response under a caller who may
already have read its headers).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._decisions import error_type
from ._internal import guarded, report_internal_error
from ._operations import ChunkReader, Operation, ResponseFields

__all__ = ["ABANDONED", "Ending", "Phase", "StreamEnd", "StreamWatch"]

ABANDONED = "_OTHER"
"""``error.type`` of a stream dropped unread."""


class Phase(enum.Enum):
    PENDING = "pending"
    ARMED = "armed"
    READING = "reading"
    ENDED = "ended"


class Ending(enum.Enum):
    CLOSED = "closed"
    FAILED = "failed"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """What the stream said by the time it ended: the same result a plain call has."""

    fields: ResponseFields | None
    output_messages: str | None
    time_to_first_chunk: float | None
    error: BaseException | None
    error_type: str | None


class StreamWatch:
    """Decides when a streaming call is over, and calls ``on_end`` once."""

    __slots__ = (
        "__weakref__",
        "_after_read",
        "_attempt_started",
        "_capture",
        "_cleanup",
        "_ending",
        "_error",
        "_on_end",
        "_operation",
        "_parsed",
        "_read_error",
        "phase",
        "reader",
        "sse",
        "time_to_first_chunk",
    )

    def __init__(
        self,
        on_end: Callable[[StreamEnd], None],
        operation: Operation | None,
        capture_content: bool,
        attempt_started: float,
        sse: bool = True,
    ) -> None:
        self._on_end: Callable[[StreamEnd], None] | None = on_end
        self._operation = operation
        self._capture = capture_content
        self._attempt_started = attempt_started
        self.sse = sse
        """An event stream (chunks), or else a JSON body that the caller reads later."""
        self.reader: ChunkReader | None = (
            operation.chunk_reader(capture_content) if sse and operation is not None else None
        )
        self.time_to_first_chunk: float | None = None
        self.phase = Phase.PENDING
        self._after_read = Phase.PENDING
        self._ending: Ending | None = None
        self._error: BaseException | None = None
        self._read_error: BaseException | None = None
        self._parsed: object | None = None
        self._cleanup: Callable[[], None] | None = None

    def on_ended(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` when the stream ends (a hook to take out)."""
        self._cleanup = cleanup

    # -- events (each guarded: a bug here must never replace the caller's chunk, close or
    # parse; the hooks that call them re-raise only the SDK's or httpx's own exceptions) ------

    @guarded
    def arm(self) -> None:
        if self.phase is Phase.READING:
            self._after_read = Phase.ARMED
        elif self.phase is Phase.PENDING:
            self.phase = Phase.ARMED
            self._end_if_ending()

    @guarded
    def chunk(self, item: object) -> None:
        if self.time_to_first_chunk is None:
            self.time_to_first_chunk = time.monotonic() - self._attempt_started
        if self.reader is not None:
            self.reader.add(item)

    @guarded
    def body_parsed(self, parsed: object) -> None:
        if self._parsed is None:
            self._parsed = parsed

    @guarded
    def begin_read(self) -> None:
        if self.phase is Phase.PENDING or self.phase is Phase.ARMED:
            self._after_read = self.phase
            self.phase = Phase.READING

    @guarded
    def end_read(self, exc: BaseException | None) -> None:
        if self.phase is not Phase.READING:
            return
        self.phase = self._after_read
        if exc is not None:
            self._remember(Ending.FAILED, exc)
        elif self._read_error is not None:
            self._remember(Ending.FAILED, self._read_error)
        self._end_if_ending()

    @guarded
    def closed(self) -> None:
        self._remember(Ending.CLOSED)
        if self.phase is not Phase.READING:
            self._end_if_ending()

    @guarded
    def failed(self, exc: BaseException) -> None:
        """An error the caller saw."""
        self._remember(Ending.FAILED, exc)
        if self.phase is not Phase.READING:
            self._end_if_ending()

    @guarded
    def bytes_failed(self, exc: BaseException) -> None:
        """A read of the body failed; if the SDK is reading, it reports its own error."""
        if self.phase is Phase.READING:
            if self._read_error is None:
                self._read_error = exc
        else:
            self.failed(exc)

    @guarded
    def abandoned(self) -> None:
        if self.phase is Phase.ENDED:
            return
        self._remember(Ending.ABANDONED)
        if self.phase is Phase.READING:
            self.phase = self._after_read
        self._end_if_ending()

    # -- rules -------------------------------------------------------------------------------

    def _remember(self, ending: Ending, exc: BaseException | None = None) -> None:
        current = self._ending
        if current is None or (ending is Ending.FAILED and current is Ending.CLOSED):
            self._ending = ending
            self._error = exc

    def _end_if_ending(self) -> None:
        if self.phase is not Phase.ARMED or self._ending is None:
            return
        self.phase = Phase.ENDED
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()
        on_end, self._on_end = self._on_end, None
        if on_end is None:
            return
        result: tuple[ResponseFields, str | None] | None = None
        try:
            result = self._result()
        except Exception:
            report_internal_error("stream result")  # re-raised under tests, after the end
        finally:
            fields, output = result or (None, None)
            error = self._error
            kind = (
                ABANDONED
                if self._ending is Ending.ABANDONED
                else (error_type(error) if error is not None else None)
            )
            on_end(StreamEnd(fields, output, self.time_to_first_chunk, error, kind))

    def _result(self) -> tuple[ResponseFields, str | None] | None:
        operation = self._operation
        if operation is None:
            return None
        if self.reader is not None:
            reader = self.reader
            cut = self._ending is not Ending.CLOSED or self._error is not None
            return reader.fields(cut), reader.output_messages() if self._capture else None
        parsed = self._parsed
        if parsed is None:
            return None
        output = operation.output_messages(parsed) if self._capture else None
        return operation.response_fields(parsed), output
