"""What reaches the server is what the caller sent, and telemetry counts only what was sent.

Uploads whose body cannot be replayed are never retried; seekable ones are rewound before each
retry; a request the transport refuses before sending (a closed client, an API key ending in a
newline) is no attempt: no attempt span, no budget, no retry, and the caller gets the SDK's own
error. Raw responses report the true number of retries, as the bare SDK's do.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry._decisions import error_type
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import (
    API_KEY,
    FAST,
    MESSAGES,
    Instrument,
    async_client,
    attrs,
    one_call,
    sync_client,
)

DATA = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions"}\n' * 20


class ReadOnce(io.RawIOBase):
    """A stream that can be read once, as a socket or a streamed download can: not seekable,
    no length known in advance (so the upload goes out chunked)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)


@pytest.fixture
def pipe() -> Iterator[IO[bytes]]:
    with io.BufferedReader(ReadOnce(DATA)) as reader:
        yield reader


def uploaded(server: FakeOpenAIServer) -> list[bytes]:
    return [request.form["file"].data for request in server.requests]


@pytest.mark.parametrize("instrumented", [False, True], ids=["bare-sdk", "ours"])
def test_a_read_once_upload_is_never_retried(
    instrumented: bool,
    pipe: IO[bytes],
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    """We never retry a body that cannot be rewound: the retry would send an empty file part,
    and the call would report success. Newer SDKs refuse that retry too; older ones make it, and
    the bare run shows what it costs: a file that is not the caller's, reported as created."""
    if instrumented:
        instrument(policy=FAST)
    server.script(Fault.server_error(500))
    client = sync_client(server)

    if not instrumented:
        try:
            client.files.create(file=("batch.jsonl", pipe), purpose="batch")
        except openai.InternalServerError:
            assert uploaded(server) == [DATA]  # the SDK refused the retry
        else:
            assert uploaded(server) == [DATA, b""]  # the SDK retried: an empty file "created"
        return

    with pytest.raises(openai.InternalServerError):
        client.files.create(file=("batch.jsonl", pipe), purpose="batch")

    assert uploaded(server) == [DATA]
    call = one_call(exporter.get_finished_spans())
    assert call.span.name == "POST /files"
    assert len(call.attempts) == 1
    assert call.attr("openai_retry.attempts") == 1
    assert call.attr("openai_retry.outcome") == "non_retryable"


async def test_a_seekable_upload_is_rewound_before_every_retry(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """The whole file every time, however far the failed attempt had read it."""
    instrument(policy=FAST)
    server.script(Fault.server_error(500), Fault.drop(), Fault.rate_limit(retry_after_ms=1))
    file = io.BytesIO(DATA)

    created = await async_client(server).files.create(file=("batch.jsonl", file), purpose="batch")

    assert created.id
    assert uploaded(server) == [DATA] * 4
    assert len(one_call(exporter.get_finished_spans()).attempts) == 4


def test_bytes_and_json_bodies_are_resent_whole(
    server: FakeOpenAIServer, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = sync_client(server)
    server.script(Fault.server_error(503), Fault.server_error(503))
    client.files.create(file=("batch.jsonl", DATA), purpose="batch")
    server.script(Fault.server_error(503))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.5)

    uploads, chats = server.requests[:3], server.requests[3:]
    assert [r.form["file"].data for r in uploads] == [DATA] * 3
    assert [r.body for r in chats] == [
        {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5}
    ] * 2


@pytest.mark.parametrize(
    ("chosen", "on_the_wire"),
    [
        ({"X-Stainless-Retry-Count": "7"}, ["7", "7"]),
        ({"x-stainless-retry-count": openai.Omit()}, [None, None]),
        ({"X-Custom": "1"}, ["0", "1"]),
    ],
    ids=["set", "removed", "not-chosen"],
)
@pytest.mark.parametrize("instrumented", [False, True], ids=["bare-sdk", "ours"])
def test_a_retry_count_header_the_caller_chose_is_left_as_chosen(
    instrumented: bool,
    chosen: dict[str, Any],
    on_the_wire: list[str | None],
    server: FakeOpenAIServer,
    instrument: Instrument,
) -> None:
    """The SDK sets ``x-stainless-retry-count`` only where the request's own headers do not set
    or remove it; so do we, and set it to the true count otherwise."""
    if instrumented:
        instrument(policy=FAST)
    client = sync_client(server, max_retries=1)
    server.script(Fault.server_error(503))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=chosen)
    assert [r.headers.get("x-stainless-retry-count") for r in server.requests] == on_the_wire


@pytest.mark.parametrize("instrumented", [False, True], ids=["bare-sdk", "ours"])
async def test_raw_responses_report_the_true_number_of_retries(
    instrumented: bool, server: FakeOpenAIServer, instrument: Instrument
) -> None:
    if instrumented:
        instrument(policy=FAST)
    aclient = async_client(server)
    client = sync_client(server)
    server.script(Fault.server_error(500), Fault.rate_limit(retry_after_ms=1))
    raw = await aclient.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert raw.retries_taken == 2

    server.script(Fault.server_error(502))
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as streamed:
        assert streamed.retries_taken == 1
        assert streamed.parse().choices[0].message.content

    assert client.models.with_raw_response.list().retries_taken == 0


def test_a_client_closed_during_a_sleep_makes_no_attempt_that_was_never_sent(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """The SDK raises its own error for a closed client at once (which error depends on its
    version: measured here on a bare client); that is not a request, so it gets no attempt
    span, is not charged to the budget and is not retried."""
    bare = sync_client(server, max_retries=0)
    bare.close()
    with pytest.raises(Exception) as bare_raised:  # noqa: PT011 (whatever the SDK raises)
        bare.models.list()
    expected = bare_raised.value
    assert server.request_count == 0

    instrument(policy=FAST)
    client = sync_client(server)
    server.script(Fault.rate_limit(retry_after_ms=1000))

    def close_once_the_first_attempt_has_failed() -> None:
        while not any(s.name == "attempt 1" for s in exporter.get_finished_spans()):
            time.sleep(0.005)  # the attempt span ends as the sleep begins
        client.close()

    closer = threading.Thread(target=close_once_the_first_attempt_has_failed)
    closer.start()
    with pytest.raises(type(expected)) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    closer.join()
    assert str(raised.value) == str(expected)

    call = one_call(exporter.get_finished_spans())
    assert server.request_count == len(call.attempts) == call.attr("openai_retry.attempts") == 1
    assert call.attr("openai_retry.outcome") == "non_retryable"
    assert call.attr("error.type") == error_type(expected)


def test_a_client_closed_during_an_attempt_is_not_retried(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Closing the client fails the attempt in flight, and every retry would be refused: the
    caller gets that attempt's own failure at once, not a backoff followed by the SDK's refusal
    of a closed client."""
    instrument(policy=FAST)
    client = sync_client(server)
    server.script(Fault.delay(2.0))

    def close_once_the_request_has_arrived() -> None:
        server.wait_for_requests(1)
        client.close()

    closer = threading.Thread(target=close_once_the_request_has_arrived)
    closer.start()
    with pytest.raises(openai.APIConnectionError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    closer.join()

    call = one_call(exporter.get_finished_spans())
    assert server.request_count == len(call.attempts) == call.attr("openai_retry.attempts") == 1
    assert attrs(call.attempts[0])["error.type"] == error_type(raised.value)
    assert call.attr("error.type") == error_type(raised.value)
    assert call.attr("openai_retry.outcome") == "non_retryable"
    assert call.attr("openai_retry.total_sleep") == 0


@pytest.mark.parametrize(
    "client_kwargs",
    [
        {"api_key": API_KEY + "\n"},
        {"api_key": API_KEY + " "},
        {"api_key": API_KEY, "default_headers": {"x-team": "ml\r\ninjected: 1"}},
        {"api_key": "sk-caf\u00e9"},
    ],
    ids=["key-newline", "key-trailing-space", "header-crlf", "key-not-ascii"],
)
def test_a_request_the_transport_refuses_is_no_attempt(
    client_kwargs: dict[str, object],
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    """The caller gets what the bare SDK raises (measured here, same request), without the bare
    SDK's pointless retries of a request that never left the process."""
    bare = sync_client(server, max_retries=0, **client_kwargs)
    with pytest.raises((openai.APIConnectionError, UnicodeEncodeError)) as bare_raised:
        bare.models.list()
    assert server.request_count == 0

    instrument(policy=FAST)
    client = sync_client(server, **client_kwargs)
    with pytest.raises(type(bare_raised.value)):
        client.models.list()

    assert server.request_count == 0
    call = one_call(exporter.get_finished_spans())
    assert call.attempts == []
    assert call.attr("openai_retry.attempts") == 0
    assert call.attr("openai_retry.outcome") == "non_retryable"


def _late_key_client(server: FakeOpenAIServer, source: str) -> openai.OpenAI:
    """A client whose key the SDK resolves per request, ending in a newline."""
    if source == "azure-ad-token-provider":
        return openai.AzureOpenAI(
            azure_ad_token_provider=lambda: API_KEY + "\n",
            api_version="2024-10-21",
            azure_endpoint=f"http://127.0.0.1:{server.port}",
            azure_deployment="prod-gpt",
        )
    client = sync_client(server, api_key=lambda: API_KEY + "\n")
    if getattr(client, "_api_key_provider", None) is None:
        pytest.skip(f"openai {openai.__version__} takes no API key from a callable")
    return client


@pytest.mark.parametrize("source", ["api-key-callable", "azure-ad-token-provider"])
def test_a_key_the_sdk_resolves_late_is_refused_once_not_retried(
    source: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """A key from a callable is only known when the SDK prepares the request, so the transport
    is the one to refuse it; that refusal is not retried (it would be refused every time)."""
    instrument(policy=FAST)
    client = _late_key_client(server, source)

    with pytest.raises(openai.APIConnectionError):
        client.models.list()

    assert server.request_count == 0
    call = one_call(exporter.get_finished_spans())
    assert len(call.attempts) == 1  # made before the refusal could be known
    assert call.attr("openai_retry.outcome") == "non_retryable"


@pytest.mark.parametrize(
    ("value", "sent"),
    [("team ", True), (" team", True), ("team\n", False), ("te\r\nam", False)],
    ids=["trailing-space", "leading-space", "newline", "crlf"],
)
async def test_what_is_refused_is_judged_by_the_clients_own_transport(
    value: str,
    sent: bool,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    """The SDK's aiohttp transport sends what h11 refuses (whitespace at either end): such a
    request is a real attempt, traced and retried; CR and LF no transport sends, and the caller
    gets what the bare SDK raises for them (measured here: its type depends on the version)."""
    headers = {"x-team": value}
    expected: BaseException | None = None
    if not sent:
        bare = async_client(
            server,
            default_headers=headers,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(),
        )
        try:
            with pytest.raises(Exception) as bare_raised:  # noqa: PT011 (whatever the SDK raises)
                await bare.models.list()
        finally:
            await bare.close()
        expected = bare_raised.value
        assert server.request_count == 0

    instrument(policy=FAST)
    client = async_client(
        server, default_headers=headers, http_client=openai.DefaultAioHttpClient()
    )
    server.script(Fault.server_error(500))
    try:
        if expected is None:
            assert (await client.models.list()).data is not None
        else:
            with pytest.raises(type(expected)):
                await client.models.list()
    finally:
        await client.close()

    call = one_call(exporter.get_finished_spans())
    assert server.request_count == len(call.attempts) == (2 if sent else 0)


def test_a_file_part_of_an_unknown_shape_counts_as_not_replayable() -> None:
    """Never guessed at: a shape whose content cannot be found is not sent a second time."""
    from otel_openai_retry._replay import capture_body

    seekable = capture_body(None, [("file", ("a.jsonl", io.BytesIO(DATA)))])
    assert seekable is not None and seekable.replayable
    for odd in ([("file", "a.jsonl", "text/plain")], 5, [b"raw"]):
        captured = capture_body(None, odd)
        assert captured is not None and not captured.replayable, odd
    assert capture_body(None, None) is None  # plain JSON: nothing to rewind
