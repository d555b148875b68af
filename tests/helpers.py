"""What the tests share: reading the span tree the way a user reads it in Jaeger, the fast policy
and the clients, sync or async as one parameter, metric points, a server for answers the fake
server cannot give, and a Python of its own in a fresh process."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import openai
from openai._response import AsyncResponseContextManager, ResponseContextManager
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry._decisions import error_type

if TYPE_CHECKING:
    import httpx2
    from openai._response import APIResponse, AsyncAPIResponse

    from otel_openai_retry.testing import FakeOpenAIServer

    sdk_httpx = httpx2  # type-checked against the newest SDK's
else:
    # The HTTP library the installed SDK is built on (httpx up to openai 2, httpx2 from 3), asked
    # of the SDK itself: the base class of its default client.
    sdk_httpx = importlib.import_module(
        openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0]
    )

T = TypeVar("T")
C = TypeVar("C")

API_KEY = "sk-test-4f9c2d7e1b8a3c6d5e0f"
"""A recognisable key, so tests can prove it never reaches telemetry."""

FAST = RetryPolicy(initial_wait=0.01, max_wait=0.05)
"""The policy of every test that retries but is not about the waits: the defaults, with backoff
in milliseconds. A test that needs more (no pacing, more attempts) ``replace()``s it."""

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

Instrument = Callable[..., OpenAIRetryInstrumentor]
Client = openai.OpenAI | openai.AsyncOpenAI


# -- spans ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One logical span and its attempt children, in order."""

    span: ReadableSpan
    attempts: list[ReadableSpan]

    def attr(self, name: str) -> object:
        assert self.span.attributes is not None
        return self.span.attributes.get(name)


def calls(spans: Sequence[ReadableSpan]) -> list[Call]:
    """Group finished spans into logical calls, checking the tree is well formed."""
    logical = [s for s in spans if s.kind is SpanKind.CLIENT and s.name.split(" ")[0] != "attempt"]
    result = []
    for span in sorted(logical, key=lambda s: s.start_time or 0):
        ctx = span.get_span_context()
        assert ctx is not None
        children = [s for s in spans if s.parent is not None and s.parent.span_id == ctx.span_id]
        for child in children:
            assert child.kind is SpanKind.INTERNAL
            assert child.context is not None and child.context.trace_id == ctx.trace_id
        children.sort(key=lambda s: s.start_time or 0)
        assert [c.name for c in children] == [f"attempt {i}" for i in range(1, len(children) + 1)]
        result.append(Call(span, children))
    attempt_total = sum(len(c.attempts) for c in result)
    assert attempt_total + len(result) == len(spans), "every span belongs to one logical call"
    return result


def one_call(spans: Sequence[ReadableSpan]) -> Call:
    found = calls(spans)
    assert len(found) == 1, [c.span.name for c in found]
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def logical_spans(spans: Sequence[ReadableSpan]) -> list[str]:
    """The names of the finished logical spans (an open one is not there yet)."""
    return [s.name for s in spans if not s.name.startswith("attempt")]


# -- clients, sync or async ---------------------------------------------------------------------


def _url(server: FakeOpenAIServer | str) -> str:
    return server if isinstance(server, str) else server.base_url


def sync_client(server: FakeOpenAIServer | str, **kwargs: Any) -> openai.OpenAI:
    """A client of the fake server (or of any ``base_url``), with the test key."""
    return openai.OpenAI(**{"api_key": API_KEY, "base_url": _url(server), **kwargs})


def async_client(server: FakeOpenAIServer | str, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(**{"api_key": API_KEY, "base_url": _url(server), **kwargs})


@dataclass(frozen=True)
class Sdk:
    """The SDK's sync or async client behind one test (the ``sdk`` fixture is both).

    Tests are ``async`` and await every call through this object: an async call runs on the
    test's event loop; a sync one runs in a worker thread, with no event loop in it, as in a
    sync program (the current OpenTelemetry context goes with it).
    """

    is_async: bool

    def client(self, server: FakeOpenAIServer | str, **kwargs: Any) -> Client:
        return (async_client if self.is_async else sync_client)(server, **kwargs)

    async def __call__(self, call: Callable[[], Awaitable[T] | T]) -> T:
        """What ``call`` returns, or, for the async client, what that returns when awaited."""
        if self.is_async:
            return await cast("Awaitable[T]", call())
        result = await asyncio.to_thread(call)
        assert not isinstance(result, Awaitable), "an async call in the sync flavour"
        return result

    async def gather(self, *calls: Callable[[], Awaitable[T] | T]) -> list[T]:
        """All at once: a task each on the loop, or a thread each."""
        if self.is_async:
            return list(await asyncio.gather(*(self(call) for call in calls)))
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=len(calls)) as threads:
            running = [
                loop.run_in_executor(threads, contextvars.copy_context().run, call)
                for call in calls
            ]
            results = await asyncio.gather(*running)
        assert not any(isinstance(result, Awaitable) for result in results)
        return cast("list[T]", results)

    async def drain(
        self,
        open_stream: Callable[[], openai.Stream[C] | Awaitable[openai.AsyncStream[C]]],
        into: list[C] | None = None,
        returned: Callable[[], None] = lambda: None,
    ) -> list[C]:
        """Every item of the stream ``open_stream`` returns, read to its end; ``returned`` runs
        once the call has returned the stream, before it is read; ``into`` keeps what came
        before an error."""
        received: list[C] = [] if into is None else into
        if self.is_async:
            opened = open_stream()
            assert not isinstance(opened, openai.Stream)
            stream = await opened
            returned()
            async for item in stream:
                received.append(item)
            return received

        def read() -> None:
            opened = open_stream()
            assert isinstance(opened, openai.Stream)
            returned()
            for item in opened:
                received.append(item)

        await asyncio.to_thread(read)
        return received

    async def parse_streamed(
        self,
        open_response: Callable[
            [],
            ResponseContextManager[APIResponse[T]]
            | AsyncResponseContextManager[AsyncAPIResponse[T]],
        ],
        before_parse: Callable[[], None] = lambda: None,
    ) -> T:
        """``with_streaming_response``: open it, run ``before_parse``, return ``parse()``."""
        if self.is_async:
            opened = open_response()
            assert isinstance(opened, AsyncResponseContextManager)
            async with opened as response:
                before_parse()
                return await response.parse()

        def parse() -> T:
            opened = open_response()
            assert isinstance(opened, ResponseContextManager)
            with opened as response:
                before_parse()
                return response.parse()

        return await asyncio.to_thread(parse)


# -- what the installed SDK raises ----------------------------------------------------------------


async def crowd(
    client: openai.AsyncOpenAI,
    count: int,
    concurrency: int,
    request: Callable[[int], Mapping[str, Any]] = lambda i: {
        "messages": [{"role": "user", "content": f"n{i}"}]
    },
) -> list[bool]:
    """``count`` chat calls, ``concurrency`` at a time, each built by ``request(i)``: which
    ones succeeded. The many-callers shape every pacing test drives."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with semaphore:
            try:
                await client.chat.completions.create(model="gpt-4o-mini", **request(i))
            except openai.APIError:
                return False
            return True

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def _stream_cut_error() -> BaseException:
    """What the bare SDK raises when a stream's body is cut after its 200, asked of the SDK
    itself through a transport that cuts it: newer SDKs wrap the transport's error in
    ``openai.APIConnectionError``, older ones let ``RemoteProtocolError`` through."""

    def answer(request: sdk_httpx.Request) -> sdk_httpx.Response:
        def body() -> Iterator[bytes]:
            raise sdk_httpx.RemoteProtocolError("peer closed connection", request=request)
            yield b""  # a generator: the cut comes as the body is read

        headers = {"content-type": "text/event-stream"}
        return sdk_httpx.Response(200, headers=headers, content=body())

    transport = sdk_httpx.MockTransport(answer)
    client = openai.OpenAI(
        api_key=API_KEY,
        base_url="http://sdk.invalid/v1",
        max_retries=0,
        http_client=sdk_httpx.Client(transport=transport),
    )
    try:
        for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            pass
    except Exception as exc:
        return exc
    raise AssertionError("the cut stream did not raise")


_cut = _stream_cut_error()  # now, before any test instruments the SDK
STREAM_CUT_ERROR: type[BaseException] = type(_cut)
"""The exception type a caller gets when a stream is cut midway, with or without us."""
STREAM_CUT_ERROR_TYPE = error_type(_cut)
"""Its ``error.type`` spelling (``openai.APIConnectionError`` on current SDKs)."""


# -- metrics --------------------------------------------------------------------------------------


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Every data point of the metric ``name`` collected now (none if it was never recorded)."""
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def histogram_points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    points = metric_points(reader, name)
    assert all(isinstance(p, HistogramDataPoint) for p in points)
    return points


def histogram_totals(reader: InMemoryMetricReader, name: str) -> tuple[int, float]:
    """Count and sum of a histogram over all its attribute sets."""
    points = histogram_points(reader, name)
    return sum(p.count for p in points), sum(p.sum for p in points)


def counter_by_error(reader: InMemoryMetricReader, name: str) -> Counter[str]:
    """A counter's value per ``error.type`` (``none`` for points without one)."""
    by_error: Counter[str] = Counter()
    for point in metric_points(reader, name):
        assert isinstance(point, NumberDataPoint)
        by_error[str((point.attributes or {}).get("error.type", "none"))] += int(point.value)
    return by_error


# -- a server for answers the fake server cannot give -------------------------------------------

Answer = Callable[[dict[str, Any]], tuple[str, bytes]]
"""The request's JSON body → the content type and body of a 200 answer."""


def json_answer(body: object) -> tuple[str, bytes]:
    return "application/json", json.dumps(body).encode()


def sse_answer(events: Sequence[object]) -> tuple[str, bytes]:
    """Server-sent events, one per item, then ``[DONE]``."""
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    return "text/event-stream", "".join([*lines, "data: [DONE]\n\n"]).encode()


class CannedServer:
    """A stdlib HTTP server on loopback that answers every POST with :attr:`answer`: chunks of
    odd shapes, a cut answer, any usage at all."""

    def __init__(self) -> None:
        self.answer: Answer | None = None
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                assert canned.answer is not None, "the test set no answer"
                content_type, body = canned.answer(json.loads(raw or b"{}"))
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._http.server_port}/v1"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


# -- a fresh Python process -------------------------------------------------------------------


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the ``OTEL_*`` variables and the OpenAI and Azure
    settings a developer may have set, plus ``extra``."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "AZURE_"))
    }
    environ.update(extra)
    return environ


def run_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
    succeed: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a fresh process, in :func:`clean_environment` plus ``env``; unless
    ``succeed`` is false, the test fails with its stderr if it does not exit 0."""
    done = subprocess.run(
        [sys.executable, *args],
        env=clean_environment(**(env or {})),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if succeed:
        assert done.returncode == 0, done.stderr
    return done


def last_json_line(done: subprocess.CompletedProcess[str]) -> Any:
    """What a script printed last, as JSON (its report)."""
    return json.loads(done.stdout.strip().splitlines()[-1])
