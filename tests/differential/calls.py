"""One scripted call, the same for the bare SDK and for ours: what is called, how, and its result.

A :class:`Scenario` is a fault script plus the shape of the call (which SDK method, sync or async,
which event loop, which retry setting): everything a run needs, as a value that hypothesis can
generate, shrink and print. :func:`run` makes the call against the fake server and returns what
the caller saw (never raising), so that the bare run and ours can be compared afterwards.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from unittest import mock

import anyio.lowlevel
import openai
import trio
from openai import _base_client

from otel_openai_retry.testing import Fault

from ..helpers import API_KEY
from ..helpers import sdk_httpx as httpx2

Flavor = Literal["sync", "asyncio", "trio"]
Kind = Literal[
    "chat",
    "chat_stream",
    "chat_raw",
    "chat_streaming_response",
    "upload_bytes",
    "upload_read_once",
]
KINDS: tuple[Kind, ...] = (
    "chat",
    "chat_stream",
    "chat_raw",
    "chat_streaming_response",
    "upload_bytes",
    "upload_read_once",
)
RAW_KINDS: frozenset[Kind] = frozenset({"chat_raw", "chat_streaming_response"})
"""The kinds whose response object reports ``retries_taken``."""
UPLOAD_KINDS: frozenset[Kind] = frozenset({"upload_bytes", "upload_read_once"})

MODEL = "gpt-4o-mini"
PROMPT = "canary prompt qz7wx4 about the merger"
"""Prompt text no telemetry may carry with capture off; the fake server's answer echoes it, so
it stands for the completion too."""
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
FILENAME = "batch.jsonl"
FILE_BYTES = b'{"custom_id": "canary-file-k3v9", "body": {}}\r\n{"custom_id": "2"}\n\x00\xff'
"""A file part with CRLF, NUL and a non-UTF-8 byte: any re-encoding or truncation shows."""
PURPOSE: Literal["batch"] = "batch"

TENANT_HEADER = "x-tenant-token"
TENANT_SECRET = "tenant-secret-5d1e8a7c"
"""A client-wide custom header's value (``default_headers``): no telemetry may carry it."""
REQUEST_HEADER = "x-request-secret"
REQUEST_SECRET = "request-secret-9b2f04d6"
"""A per-request header's value (``extra_headers``): no telemetry may carry it."""
SECRETS = (API_KEY, TENANT_SECRET, REQUEST_SECRET)
CONTENT = ("qz7wx4", "canary-file-k3v9")
"""Distinctive pieces of the prompt and of the file: a truncated copy is still a leak."""

SHORT_TIMEOUT_S = 0.5
"""The client's timeout in a script that has a :data:`TIMEOUT_FAULT`: small, as every timed-out
attempt costs it, yet far above a loopback answer's few milliseconds."""
CALM_TIMEOUT_S = 30.0
"""The client's timeout in every other script: no answer of the fake server, however loaded the
machine, comes near it, so a timeout there is never the machine's doing."""
TIMEOUT_FAULT = Fault.delay(60.0)
"""An answer that comes after the client has given up: the server cancels it when the client
hangs up, so the run does not wait for it."""

BadHeader = Literal["", "api_key", "custom"]


@dataclass(frozen=True)
class Scenario:
    """A fault script and the call it is applied to."""

    flavor: Flavor
    kind: Kind
    max_retries: int | None
    """Passed to the client when not ``None``; ``None`` leaves the SDK's default (2 retries) to
    the bare SDK and our policy to ours."""
    faults: tuple[Fault, ...] = ()
    bad_header: BadHeader = ""
    """A header value the transport refuses: the API key, or a custom header's value, with a
    trailing newline (as keys read from files often have)."""

    @property
    def timeout_s(self) -> float:
        return SHORT_TIMEOUT_S if TIMEOUT_FAULT in self.faults else CALM_TIMEOUT_S

    def __repr__(self) -> str:
        retries = "default" if self.max_retries is None else str(self.max_retries)
        bad = f", bad_header={self.bad_header}" if self.bad_header else ""
        return (
            f"Scenario({self.flavor}, {self.kind}, max_retries={retries}{bad}, "
            f"faults=[{', '.join(map(repr, self.faults))}])"
        )


@dataclass
class Outcome:
    """What the caller saw: an exception, or success (and the ``retries_taken`` it was told)."""

    error: BaseException | None = None
    retries_taken: int | None = None
    text: str = field(default="", repr=False)

    def __repr__(self) -> str:
        if self.error is None:
            return f"Outcome(ok, retries_taken={self.retries_taken})"
        return f"Outcome({type(self.error).__module__}.{type(self.error).__qualname__})"


class ReadOnce(io.RawIOBase):
    """A stream that can be read once and not rewound, like a pipe, a socket or a download."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data[self._position : self._position + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)


def client_kwargs(scenario: Scenario, base_url: str, max_retries: int | None) -> dict[str, Any]:
    tenant = TENANT_SECRET + ("\n" if scenario.bad_header == "custom" else "")
    kwargs: dict[str, Any] = {
        "api_key": API_KEY + ("\n" if scenario.bad_header == "api_key" else ""),
        "base_url": base_url,
        "timeout": scenario.timeout_s,
        "default_headers": {TENANT_HEADER: tenant},
    }
    if max_retries is not None:
        kwargs["max_retries"] = max_retries
    return kwargs


EXTRA = {REQUEST_HEADER: REQUEST_SECRET}


def _file(kind: Kind) -> tuple[str, bytes | IO[bytes]]:
    if kind == "upload_read_once":
        return (FILENAME, io.BufferedReader(ReadOnce(FILE_BYTES)))
    return (FILENAME, FILE_BYTES)


def _call_sync(client: openai.OpenAI, kind: Kind) -> Outcome:
    chat = client.chat.completions
    if kind == "chat":
        reply = chat.create(model=MODEL, messages=MESSAGES, extra_headers=EXTRA)
        return Outcome(text=reply.choices[0].message.content or "")
    if kind == "chat_stream":
        stream = chat.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=EXTRA)
        with stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return Outcome(text=text)
    if kind == "chat_raw":
        raw = chat.with_raw_response.create(model=MODEL, messages=MESSAGES, extra_headers=EXTRA)
        return Outcome(retries_taken=raw.retries_taken, text=str(raw.parse().choices[0]))
    if kind == "chat_streaming_response":
        with chat.with_streaming_response.create(
            model=MODEL, messages=MESSAGES, extra_headers=EXTRA
        ) as response:
            return Outcome(retries_taken=response.retries_taken, text=str(response.parse()))
    uploaded = client.files.create(file=_file(kind), purpose=PURPOSE, extra_headers=EXTRA)
    return Outcome(text=uploaded.id)


async def _call_async(client: openai.AsyncOpenAI, kind: Kind) -> Outcome:
    chat = client.chat.completions
    if kind == "chat":
        reply = await chat.create(model=MODEL, messages=MESSAGES, extra_headers=EXTRA)
        return Outcome(text=reply.choices[0].message.content or "")
    if kind == "chat_stream":
        stream = await chat.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=EXTRA)
        async with stream:
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return Outcome(text=text)
    if kind == "chat_raw":
        raw = await chat.with_raw_response.create(
            model=MODEL, messages=MESSAGES, extra_headers=EXTRA
        )
        return Outcome(retries_taken=raw.retries_taken, text=str(raw.parse().choices[0]))
    if kind == "chat_streaming_response":
        async with chat.with_streaming_response.create(
            model=MODEL, messages=MESSAGES, extra_headers=EXTRA
        ) as response:
            return Outcome(retries_taken=response.retries_taken, text=str(await response.parse()))
    uploaded = await client.files.create(file=_file(kind), purpose=PURPOSE, extra_headers=EXTRA)
    return Outcome(text=uploaded.id)


def run(scenario: Scenario, base_url: str, *, no_retries: bool = False) -> Outcome:
    """Make the scenario's call once; the caller's exception is returned, not raised.

    ``no_retries`` overrides the scenario's ``max_retries`` with 0 (how the SDK is asked which
    exception a single answer gives).
    """
    kwargs = client_kwargs(scenario, base_url, 0 if no_retries else scenario.max_retries)
    if scenario.flavor == "sync":
        try:
            with openai.OpenAI(**kwargs) as client:
                return _call_sync(client, scenario.kind)
        except Exception as exc:
            return Outcome(error=exc)

    async def main() -> Outcome:
        try:
            async with openai.AsyncOpenAI(**kwargs) as client:
                return await _call_async(client, scenario.kind)
        except Exception as exc:
            return Outcome(error=exc)

    if scenario.flavor == "asyncio":
        return asyncio.run(main())
    return trio.run(main)


def status_error_class(status: int) -> type[BaseException]:
    """The exception class the SDK raises for a final answer with this status, asked of the
    SDK itself (the same call its request loop makes), not read from a table of ours."""
    client = openai.OpenAI(api_key="sk-oracle", base_url="http://127.0.0.1:9/v1")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(status, request=request)
    return type(client._make_status_error("oracle", body=None, response=response))


class _InstantTime:
    """``time`` as the SDK's retry loop sees it during a bare run: sleeps return at once."""

    time = staticmethod(time.time)

    def __init__(self, slept: list[float]) -> None:
        self._slept = slept

    def sleep(self, seconds: float) -> None:
        self._slept.append(seconds)


class _InstantAnyio:
    """``anyio`` as the SDK's async retry loop sees it: a sleep is a bare checkpoint."""

    def __init__(self, slept: list[float]) -> None:
        self._slept = slept

    async def sleep(self, seconds: float) -> None:
        self._slept.append(seconds)
        await anyio.lowlevel.checkpoint()


@contextmanager
def sdk_sleeps_skipped() -> Iterator[list[float]]:
    """A clock mock for the bare SDK's runs only: its backoff (0.5-8 s) and the hints it honours
    (up to 120 s) would take minutes per script. Yields the sleeps it asked for.

    ``time`` and ``anyio`` are used by ``openai._base_client`` for nothing but the retry sleep
    and the HTTP-date hint's ``time.time()``, which stays real.
    """
    slept: list[float] = []
    with (
        mock.patch.object(_base_client, "time", _InstantTime(slept)),
        mock.patch.object(_base_client, "anyio", _InstantAnyio(slept)),
    ):
        yield slept
