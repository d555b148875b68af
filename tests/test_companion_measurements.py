"""Beneath a peer's inference span, ours records the GenAI measurements that peer does not.

The peers themselves run in the interop session (``tests/interop``); here a peer's span is made
as that peer makes it (its name, kind and instrumentation scope, current around the SDK call) on
the test's tracer provider, so the rule is checked for each entry of the recognised-peer list in
the main suite: no span of ours beside the peer's, every attempt beneath it, the retry summary on
it, and of the GenAI metrics exactly those the peer leaves to us.
"""

from __future__ import annotations

import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_openai_retry._companion import PEER_SCOPES
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, MESSAGES, Instrument, Sdk, metric_points

NAMES = {
    "duration": "gen_ai.client.operation.duration",
    "usage": "gen_ai.client.token.usage",
    "ttfc": "gen_ai.client.operation.time_to_first_chunk",
}


def recorded(reader: InMemoryMetricReader, name: str) -> int:
    return sum(getattr(p, "count", 0) for p in metric_points(reader, name))


@pytest.mark.parametrize("scope", sorted(PEER_SCOPES))
async def test_ours_records_only_the_genai_measurements_the_peer_leaves(
    scope: str,
    sdk: Sdk,
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = sdk.client(server)
    peer = tracer_provider.get_tracer(scope)
    server.script(Fault.server_error(500), Fault.rate_limit(retry_after_ms=5))
    with peer.start_as_current_span("chat m", kind=SpanKind.CLIENT):
        await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    server.script(Fault.server_error(500))
    with peer.start_as_current_span("chat m", kind=SpanKind.CLIENT):
        chunks = await sdk.drain(
            lambda: client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    assert chunks
    spans = exporter.get_finished_spans()
    peers = [s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == scope]
    ours = [s for s in spans if s not in peers]
    assert [s.kind for s in ours] == [SpanKind.INTERNAL] * 5, "attempts only: 3, then 2"
    assert server.request_count == 5
    ids = {s.context.span_id for s in peers}
    assert all(s.parent is not None and s.parent.span_id in ids for s in ours)
    assert [(s.attributes or {}).get("openai_retry.attempts") for s in peers] == [3, 2]

    left = PEER_SCOPES[scope].records
    for kind, name in NAMES.items():
        expected = {"duration": 2, "usage": 4, "ttfc": 1}[kind] if kind not in left else 0
        assert recorded(metric_reader, name) == expected, name


async def test_a_failed_call_leaves_the_peers_span_to_the_peer(
    sdk: Sdk,
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = sdk.client(server)
    server.script(*[Fault.server_error(500)] * 5)
    peer = tracer_provider.get_tracer("pydantic-ai")
    with (
        pytest.raises(openai.InternalServerError),
        peer.start_as_current_span("chat m", kind=SpanKind.CLIENT),
    ):
        await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    assert server.request_count == 5
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat m"]
    assert "error.type" not in (span.attributes or {}), "the peer says how its call failed"
    assert (span.attributes or {}).get("openai_retry.outcome") == "exhausted"
    (duration,) = metric_points(metric_reader, NAMES["duration"])
    assert (duration.attributes or {}).get("error.type") == "openai.InternalServerError"
    assert span.status.status_code is StatusCode.ERROR, "set by the peer's own span handling"
