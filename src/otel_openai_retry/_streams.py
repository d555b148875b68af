"""Streams: the logical span of a streaming call ends when the stream does, exactly once.

A call is a stream here when the caller gets its response before the body is read: SSE
(``stream=True``), and ``with_streaming_response`` without ``stream=True``, whose JSON body the
caller reads later (``parse()``, ``read()``, ``iter_bytes()``...). Hooks, all on the one ``httpx``
response of the successful attempt:

- its byte stream is wrapped (per response, a public httpx attribute) so that closing the
  response — which every path does: exhaustion, ``close()``, ``async with``, the ``stream()``
  helpers — is seen;
- the SDK's ``Stream.__stream__`` / ``AsyncStream.__stream__`` is wrapped (class level) so that
  each parsed chunk is seen: time to first chunk, ids, finish reasons, usage, and errors
  mid-stream as the caller sees them (``openai.APIConnectionError``, not the httpx error);
- for a lazily read JSON body, the caller's ``APIResponse.parse()`` is wrapped on that one
  response object, so that the parsed body's usage and response attributes reach the span and
  a parse that fails ends it as the caller's error;
- ``weakref.finalize`` on the stream and the response, so a stream dropped unread still ends its
  span (``error.type = _OTHER``).

Rules of the state machine (:class:`StreamWatch`):

1. Until the call returns the stream (``arm``), nothing ends the span: the retry loop owns it.
2. After that, the first of these ends it, once: the body closed (exhausted, closed early, or
   after the caller's parse), an error seen by the caller, the stream or response collected.
3. While the SDK is inside a chunk's parse or a body's ``parse()``, a close or a read error
   waits: the SDK reports the outcome the caller sees (``openai.APIConnectionError`` rather than
   the httpx error), then the watch settles.
4. Summarising the chunks can never keep the span open: the span ends even if that fails.

Nothing here retries: once the call has returned the stream, a failure goes to the caller, even
before the first chunk (the bare SDK does not retry that either, and retrying would mean either
holding back the stream until its first chunk or swapping the response under a caller who may
already have read its headers).
"""

from __future__ import annotations

import inspect
import sys
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from openai import BaseModel
from openai._response import BaseAPIResponse

from ._attributes import usage_tokens
from ._content import choice_index
from ._internal import guarded

if TYPE_CHECKING:
    from ._telemetry import CallTelemetry

__all__ = ["EXTENSION_KEY", "StreamSummary", "StreamWatch", "stream_method_wrapper"]

EXTENSION_KEY = "otel_openai_retry.stream_watch"
"""Key in ``httpx.Response.extensions`` under which the response's watch is found."""

ABANDONED = "_OTHER"


class StreamSummary:
    """What the chunks said, accumulated as they pass (text only when content is captured)."""

    __slots__ = (
        "input_tokens",
        "output_tokens",
        "reasons",
        "response_id",
        "response_model",
        "texts",
    )

    def __init__(self, capture_content: bool) -> None:
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.reasons: dict[int, str] = {}
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.texts: dict[int, list[str]] | None = {} if capture_content else None

    def add(self, chunk: object) -> None:
        kind = getattr(chunk, "type", None)
        if isinstance(kind, str):  # Responses API events
            self._add_response_event(kind, chunk)
            return
        chunk_id = getattr(chunk, "id", None)
        if isinstance(chunk_id, str) and self.response_id is None:
            self.response_id = chunk_id
        model = getattr(chunk, "model", None)
        if isinstance(model, str) and self.response_model is None:
            self.response_model = model
        for position, choice in enumerate(getattr(chunk, "choices", None) or ()):
            index = choice_index(choice, position)
            reason = getattr(choice, "finish_reason", None)
            if isinstance(reason, str):
                self.reasons[index] = reason
            if self.texts is not None:
                delta = getattr(choice, "delta", None)
                text = getattr(delta, "content", None) if delta is not None else None
                if text is None:
                    text = getattr(choice, "text", None)
                if isinstance(text, str):
                    self.texts.setdefault(index, []).append(text)
        self._add_usage(getattr(chunk, "usage", None))

    def _add_response_event(self, kind: str, event: object) -> None:
        response = getattr(event, "response", None)
        if response is not None:
            response_id = getattr(response, "id", None)
            if isinstance(response_id, str):
                self.response_id = response_id
            model = getattr(response, "model", None)
            if isinstance(model, str):
                self.response_model = model
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                details = getattr(response, "incomplete_details", None)
                reason = getattr(details, "reason", None)
                status = getattr(response, "status", None)
                if isinstance(reason, str):
                    self.reasons[0] = reason
                elif isinstance(status, str):
                    self.reasons[0] = "stop" if status == "completed" else status
                self._add_usage(getattr(response, "usage", None))
        elif kind == "response.output_text.delta" and self.texts is not None:
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                self.texts.setdefault(0, []).append(delta)

    def _add_usage(self, usage: object) -> None:
        input_tokens, output_tokens = usage_tokens(usage)
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens


class StreamWatch:
    """Decides when a streaming call is over, and tells its telemetry once."""

    __slots__ = (
        "__weakref__",
        "_armed",
        "_attempt_started",
        "_call",
        "_closed",
        "_error",
        "_error_type",
        "_fallback_error",
        "_hooked",
        "_in_next",
        "parsed",
        "sse",
        "summary",
        "time_to_first_chunk",
    )

    def __init__(
        self, call: CallTelemetry, attempt_started: float, capture_content: bool, sse: bool = True
    ) -> None:
        self._call: CallTelemetry | None = call
        self._attempt_started = attempt_started
        self.sse = sse
        """An event stream (chunks), or else a JSON body that the caller reads later."""
        self.parsed: BaseModel | None = None
        """The lazily read body as the caller's ``parse()`` returned it."""
        self.summary = StreamSummary(capture_content)
        self.time_to_first_chunk: float | None = None
        self._armed = False
        self._closed = False
        self._in_next = False
        self._error: BaseException | None = None
        self._fallback_error: BaseException | None = None
        self._error_type: str | None = None
        self._hooked: object | None = None
        """The ``APIResponse`` whose ``parse`` is overridden, until the override is removed."""

    @property
    def error(self) -> BaseException | None:
        return self._error or self._fallback_error

    @property
    def error_type(self) -> str | None:
        return self._error_type

    # -- signals -------------------------------------------------------------------------

    def arm(self) -> None:
        """The logical call returned this stream to the caller: from now on, the stream owns
        the end of the span."""
        self._armed = True
        self._settle()

    @guarded
    def chunk(self, item: object) -> None:
        if self.time_to_first_chunk is None:
            self.time_to_first_chunk = time.monotonic() - self._attempt_started
        self.summary.add(item)

    def failed(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._settle()

    def bytes_failed(self, exc: BaseException) -> None:
        """A read of the body failed; if the SDK is parsing, it reports its own error."""
        if self._in_next:
            self._fallback_error = exc
        else:
            self.failed(exc)

    def closed(self) -> None:
        self._closed = True
        if not self._in_next:  # else the SDK's parse settles once it has reported
            self._settle()

    def body_parsed(self, parsed: object) -> None:
        if self.parsed is None and isinstance(parsed, BaseModel):
            self.parsed = parsed
        self._settle()

    def abandoned(self) -> None:
        """The stream (or its response) was garbage-collected."""
        if self._call is None:
            return
        if not self._closed:
            self._error_type = ABANDONED
            self._closed = True
        self._in_next = False
        self._settle()

    def _settle(self) -> None:
        call = self._call
        if call is None or not self._armed:
            return
        if self._closed or self.error is not None:
            self._call = None
            if self._hooked is not None:
                self._unhook()
            call.stream_ended(self)

    # -- observing the SDK's chunk generator ---------------------------------------------------

    async def observe_async(self, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            while True:
                self._in_next = True
                try:
                    item = await inner.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self._in_next = False
                self.chunk(item)
                yield item
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.failed(exc)
            raise
        finally:
            try:
                await inner.aclose()  # type: ignore[attr-defined]
            finally:
                self._settle()

    def observe_sync(self, inner: Iterator[Any]) -> Iterator[Any]:
        try:
            while True:
                self._in_next = True
                try:
                    item = next(inner)
                except StopIteration:
                    break
                finally:
                    self._in_next = False
                self.chunk(item)
                yield item
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.failed(exc)
            raise
        finally:
            try:
                inner.close()  # type: ignore[attr-defined]
            finally:
                self._settle()

    def install(self, response: Any) -> None:
        """Attach to the httpx response of the successful attempt."""
        response.extensions[EXTENSION_KEY] = self
        response.stream = _watched_byte_stream_class(type(response))(response.stream, self)
        weakref.finalize(response, self.abandoned)

    def observe_parse(self, api_response: object) -> None:
        """Wrap ``parse`` on the one ``APIResponse`` the caller gets for a lazily read body.

        On that object only (the class is untouched), and only for its first ``parse()``: the
        body is read inside it, so the body's close waits for the parsed model, whose usage and
        ids then go on the span; a parse that raises ends the span with the caller's error.
        The first call, or the end of the span, removes the override, so later calls are the
        SDK's own and no reference cycle keeps the response alive.
        """
        if self.sse or not isinstance(api_response, BaseAPIResponse):
            return
        original = api_response.parse  # type: ignore[attr-defined]
        if inspect.iscoroutinefunction(original):

            async def parse_async(*args: Any, **kwargs: Any) -> Any:
                self._parse_started()
                try:
                    parsed = await original(*args, **kwargs)
                except BaseException as exc:
                    self._parse_ended(None, exc)
                    raise
                self._parse_ended(parsed, None)
                return parsed

            api_response.parse = parse_async  # type: ignore[attr-defined]
            self._hooked = api_response
            return

        def parse_sync(*args: Any, **kwargs: Any) -> Any:
            self._parse_started()
            try:
                parsed = original(*args, **kwargs)
            except BaseException as exc:
                self._parse_ended(None, exc)
                raise
            self._parse_ended(parsed, None)
            return parsed

        api_response.parse = parse_sync  # type: ignore[attr-defined]
        self._hooked = api_response

    def _unhook(self) -> None:
        hooked, self._hooked = self._hooked, None
        if hooked is not None:
            vars(hooked).pop("parse", None)

    def _parse_started(self) -> None:
        self._unhook()
        self._in_next = True

    def _parse_ended(self, parsed: object, exc: BaseException | None) -> None:
        self._in_next = False
        if exc is not None:
            self.failed(exc)
        else:
            self.body_parsed(parsed)


_byte_stream_classes: dict[type, type] = {}


def _watched_byte_stream_class(response_type: type) -> Callable[[Any, StreamWatch], Any]:
    """A byte stream wrapper for whichever httpx the SDK uses (``httpx`` or ``httpx2``)."""
    cls = _byte_stream_classes.get(response_type)
    if cls is not None:
        return cls
    httpx_module: Any = sys.modules[response_type.__module__.split(".", 1)[0]]

    class WatchedByteStream(httpx_module.SyncByteStream, httpx_module.AsyncByteStream):  # type: ignore[misc]
        """Reports the end of the body (close) and read failures; passes bytes through."""

        def __init__(self, inner: Any, watch: StreamWatch) -> None:
            self._inner = inner
            self._watch = watch

        def __iter__(self) -> Iterator[bytes]:
            try:
                yield from self._inner
            except GeneratorExit:
                raise
            except BaseException as exc:
                self._watch.bytes_failed(exc)
                raise

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for part in self._inner:
                    yield part
            except GeneratorExit:
                raise
            except BaseException as exc:
                self._watch.bytes_failed(exc)
                raise

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._watch.closed()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._watch.closed()

    _byte_stream_classes[response_type] = WatchedByteStream
    return WatchedByteStream


def stream_method_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrapper for ``Stream.__stream__`` / ``AsyncStream.__stream__``: watch the chunks."""
    iterator = wrapped(*args, **kwargs)
    response = getattr(instance, "response", None)
    extensions = getattr(response, "extensions", None)
    watch = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    if not isinstance(watch, StreamWatch):
        return iterator
    weakref.finalize(instance, watch.abandoned)
    if hasattr(iterator, "__anext__"):
        return watch.observe_async(iterator)
    return watch.observe_sync(iterator)
