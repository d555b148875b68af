"""Where a :class:`~otel_openai_retry._streams.StreamWatch` hears about its stream.

All on the one ``httpx`` response of the successful attempt:

- its byte stream is wrapped (per response, a public httpx attribute) so that closing the
  response — which every path does: exhaustion, ``close()``, ``async with``, the ``stream()``
  helpers — is seen, and so are read failures;
- the SDK's ``Stream.__stream__`` / ``AsyncStream.__stream__`` is wrapped (class level) so that
  each parsed chunk is seen, and errors mid-stream as the caller sees them;
- for a lazily read JSON body, the caller's ``APIResponse.parse()`` is wrapped on that one
  response object, so that the parsed body reaches the span and a parse that fails ends it as the
  caller's error;
- ``weakref.finalize`` on the stream and the response, so a stream dropped unread still ends.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from openai._response import BaseAPIResponse

from ._streams import StreamWatch

__all__ = ["EXTENSION_KEY", "install", "observe_parse", "stream_method_wrapper"]

EXTENSION_KEY = "otel_openai_retry.stream_watch"
"""Key in ``httpx.Response.extensions`` under which the response's watch is found."""


def install(watch: StreamWatch, response: Any) -> None:
    """Attach ``watch`` to the httpx response of the successful attempt."""
    response.extensions[EXTENSION_KEY] = watch
    response.stream = _watched_byte_stream_class(type(response))(response.stream, watch)
    weakref.finalize(response, watch.abandoned)


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
        return _ObservedAsync(watch, iterator)
    return _observe_sync(watch, iterator)


class _ObservedAsync:
    """The chunks of an ``AsyncStream`` as the SDK's own generator yields them, told to the
    watch. A plain async iterator, not an async generator: asyncio finalizes every dropped
    async generator on its own, and a generator of ours closing the SDK's from its ``finally``
    raced that finalizer ("aclose(): asynchronous generator is already running", logged by the
    loop for each stream dropped half-read). The SDK's generator is left to the loop, as
    without us."""

    __slots__ = ("_inner", "_watch")

    def __init__(self, watch: StreamWatch, inner: AsyncIterator[Any]) -> None:
        self._watch, self._inner = watch, inner

    def __aiter__(self) -> _ObservedAsync:
        return self

    async def __anext__(self) -> Any:
        watch = self._watch
        watch.begin_read()
        try:
            item = await self._inner.__anext__()
        except StopAsyncIteration:
            watch.end_read(None)
            watch.closed()  # read to its end, even by a transport that never closes
            raise
        except BaseException as exc:
            watch.end_read(exc)
            raise
        watch.end_read(None)
        watch.chunk(item)
        return item

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


def _observe_sync(watch: StreamWatch, inner: Iterator[Any]) -> Iterator[Any]:
    try:
        while True:
            watch.begin_read()
            try:
                item = next(inner)
            except StopIteration:
                watch.end_read(None)
                watch.closed()  # read to its end, even by a transport that never closes
                break
            except BaseException as exc:
                watch.end_read(exc)
                raise
            watch.end_read(None)
            watch.chunk(item)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:  # thrown in at a yield: still the caller's error
        watch.failed(exc)
        raise
    finally:
        inner.close()  # type: ignore[attr-defined]


def observe_parse(watch: StreamWatch, api_response: object) -> None:
    """Wrap ``parse`` on the one ``APIResponse`` the caller gets for a lazily read body.

    On that object only (the class is untouched), and only for its first ``parse()``: the body is
    read inside it, so the body's close waits for the parsed model, whose usage and ids then go
    on the span; a parse that raises ends the span with the caller's error. The first call, or
    the end of the stream, removes the override, so later calls are the SDK's own and no
    reference cycle keeps the response alive.
    """
    if watch.sse or not isinstance(api_response, BaseAPIResponse):
        return
    original = api_response.parse  # type: ignore[attr-defined]
    # Weakly: the watch's finalizer on the httpx response must not be kept from ever firing by
    # a strong path from the watch back to that response (a response dropped unread).
    response_ref = weakref.ref(api_response)

    def remove() -> None:
        hooked = response_ref()
        if hooked is not None:
            vars(hooked).pop("parse", None)

    def unhook() -> None:
        remove()
        watch.begin_read()

    def ended(parsed: object, exc: BaseException | None) -> None:
        if exc is None:
            watch.body_parsed(parsed)
        watch.end_read(exc)

    if inspect.iscoroutinefunction(original):

        async def parse_async(*args: Any, **kwargs: Any) -> Any:
            unhook()
            try:
                parsed = await original(*args, **kwargs)
            except BaseException as exc:
                ended(None, exc)
                raise
            ended(parsed, None)
            return parsed

        api_response.parse = parse_async  # type: ignore[attr-defined]
    else:

        def parse_sync(*args: Any, **kwargs: Any) -> Any:
            unhook()
            try:
                parsed = original(*args, **kwargs)
            except BaseException as exc:
                ended(None, exc)
                raise
            ended(parsed, None)
            return parsed

        api_response.parse = parse_sync  # type: ignore[attr-defined]
    watch.on_ended(remove)  # also when the body ends unparsed: no cycle keeps the response


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
