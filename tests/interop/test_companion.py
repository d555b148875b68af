"""Beside another OpenAI instrumentation: one inference span per call, attempts beneath it.

Each peer that instruments the SDK's calls (the official one, OpenLLMetry, OpenInference,
Logfire, Langfuse) comes from PyPI into a directory of its own (``peers.py``) and runs with ours in
a fresh process, against the fake server, in both instrumentation orders, sync and async: a plain
call retried after a 500 and a 429, a stream after a 500, an embedding after a dropped connection.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from ..helpers import last_json_line, run_python
from .peers import PEERS, Peer, install

SCRIPT = """
import asyncio, json, sys
import openai
from openai._base_client import AsyncAPIClient, SyncAPIClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault
PEER_IMPORTS

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

order, flavour, mode = sys.argv[1], sys.argv[2], sys.argv[3]
memory = InMemorySpanExporter()
tracer_provider = TracerProvider(sampler=ALWAYS_OFF if mode == "sampled-out" else ALWAYS_ON)
tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
originals = (SyncAPIClient.request, AsyncAPIClient.request)


def ours():
    OpenAIRetryInstrumentor().instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        policy=RetryPolicy(initial_wait=0.01, max_wait=0.02),
    )


def peer():
    PEER_INSTRUMENT


def peer_off():
    PEER_UNINSTRUMENT


for step in (ours, peer) if order == "ours-first" else (peer, ours):
    step()

MESSAGES = [{"role": "user", "content": "hi"}]


async def calls_async(server):
    client = openai.AsyncOpenAI(api_key="sk-x", base_url=server.base_url)
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    server.script(Fault.server_error(500))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    server.script(Fault.drop())
    await client.embeddings.create(model="text-embedding-3-small", input="hi")
    return chunks


def calls_sync(server):
    client = openai.OpenAI(api_key="sk-x", base_url=server.base_url)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    server.script(Fault.server_error(500))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    server.script(Fault.drop())
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    return chunks


with FakeOpenAIServer() as server:
    server.script(Fault.server_error(500), Fault.rate_limit(retry_after_ms=5))
    if mode == "suppressed":
        with suppress_instrumentation():
            chunks = asyncio.run(calls_async(server)) if flavour == "async" else calls_sync(server)
    else:
        chunks = asyncio.run(calls_async(server)) if flavour == "async" else calls_sync(server)
    requests = server.request_count

spans = memory.get_finished_spans()
by_id = {s.context.span_id: s for s in spans}
metrics = {}
data = reader.get_metrics_data()
for resource in data.resource_metrics if data is not None else ():
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            total = 0
            for point in metric.data.data_points:
                total += point.count if isinstance(point, HistogramDataPoint) else point.value
            key = f"{scope.scope.name}:{metric.name}"
            metrics[key] = metrics.get(key, 0) + total

for step in (peer_off, OpenAIRetryInstrumentor().uninstrument) if order == "ours-first" else (
    OpenAIRetryInstrumentor().uninstrument, peer_off
):
    step()

print(json.dumps({
    "requests": requests,
    "chunks": len(chunks),
    "restored": (SyncAPIClient.request, AsyncAPIClient.request) == originals,
    "spans": [
        {
            "name": s.name,
            "kind": s.kind.name,
            "scope": s.instrumentation_scope.name,
            "parent": by_id[s.parent.span_id].name
            if s.parent and s.parent.span_id in by_id
            else None,
            "attempts": (s.attributes or {}).get("openai_retry.attempts"),
            "outcome": (s.attributes or {}).get("openai_retry.outcome"),
            "ours": sorted(k for k in (s.attributes or {}) if k.startswith("openai_retry.")),
        }
        for s in sorted(spans, key=lambda s: s.start_time)
    ],
    "metrics": metrics,
}))
"""


@pytest.fixture(scope="module", params=[name for name, p in PEERS.items() if p.sdk_calls])
def peer(request: pytest.FixtureRequest) -> tuple[Peer, str]:
    chosen = PEERS[request.param]
    return chosen, os.fspath(install(chosen))


def run(peer: Peer, site: str, order: str, flavour: str, mode: str = "plain") -> Any:
    script = (
        SCRIPT.replace("PEER_IMPORTS", peer.imports)
        .replace("PEER_INSTRUMENT", peer.instrument)
        .replace("PEER_UNINSTRUMENT", peer.uninstrument)
    )
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    return last_json_line(
        run_python("-c", script, order, flavour, mode, env={"PYTHONPATH": path}, timeout=120)
    )


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("order", ["ours-first", "peer-first"])
def test_one_inference_span_per_call_with_every_attempt_beneath_it(
    peer: tuple[Peer, str], order: str, flavour: str
) -> None:
    chosen, site = peer
    report = run(chosen, site, order, flavour)
    assert report["requests"] == 7, "3 for the plain call, 2 for the stream, 2 for the embedding"
    assert report["chunks"] > 0
    spans = report["spans"]
    inference = [
        s for s in spans if not s["name"].startswith("attempt ") and s["name"] not in chosen.logs
    ]
    assert {s["scope"] for s in inference} <= {chosen.span[1], *chosen.other_scopes}, (
        "the peer's spans only"
    )
    assert len(inference) == 3, "one per call: none of ours beside the peer's"
    chat = [s for s in inference if s["name"] == chosen.span[0]]
    attempts = [s for s in spans if s["name"].startswith("attempt ")]
    assert len(attempts) == report["requests"], "attempt spans = requests received"
    assert {s["parent"] for s in attempts} <= {s["name"] for s in inference}
    assert Counter(s["name"] for s in attempts) == {"attempt 1": 3, "attempt 2": 3, "attempt 3": 1}
    assert [(s["attempts"], s["outcome"]) for s in chat] == [(3, "success"), (2, "success")]
    metrics = report["metrics"]
    ours = {name.split(":", 1)[1] for name in metrics if name.startswith("otel_openai_retry:")}
    assert ours == {
        "openai_retry.client.call.retries",
        "openai_retry.client.call.retry_delay",
        "openai_retry.client.failed_attempts",
        "openai_retry.client.rate_limiting.requests",
        *chosen.ours_genai,
    }, "no GenAI metric of ours that the peer records itself"
    theirs = {name.split(":", 1)[1] for name in metrics if not name.startswith("otel_openai_")}
    assert not {n for n in ours & theirs if n.startswith("gen_ai.")}, "recorded by both"
    if "gen_ai.client.operation.duration" in chosen.ours_genai:
        assert metrics["otel_openai_retry:gen_ai.client.operation.duration"] == 3, "once a call"
    assert metrics["otel_openai_retry:openai_retry.client.call.retries"] == 3, "once a call"
    assert metrics["otel_openai_retry:openai_retry.client.failed_attempts"] == 4
    assert report["restored"] is True


@pytest.mark.parametrize("order", ["ours-first", "peer-first"])
def test_a_dropping_sampler_still_leaves_the_genai_metrics_to_the_peer(
    peer: tuple[Peer, str], order: str
) -> None:
    chosen, site = peer
    report = run(chosen, site, order, "sync", "sampled-out")
    assert report["requests"] == 7
    assert report["spans"] == []
    ours = {n for n in report["metrics"] if n.startswith("otel_openai_retry:gen_ai.")}
    assert ours == {f"otel_openai_retry:{name}" for name in chosen.ours_genai}, (
        "the peer's metrics do not depend on sampling: ours would be doubles"
    )
    assert report["metrics"]["otel_openai_retry:openai_retry.client.call.retries"] == 3


def test_suppressed_calls_leave_nothing_of_ours_on_the_peers_spans(
    peer: tuple[Peer, str],
) -> None:
    chosen, site = peer
    report = run(chosen, site, "peer-first", "sync", "suppressed")
    assert report["requests"] == 7, "the retries go on"
    assert not [s for s in report["spans"] if s["scope"] == "otel_openai_retry"]
    assert not [s["ours"] for s in report["spans"] if s["ours"]]
    assert not [n for n in report["metrics"] if n.startswith("otel_openai_retry:")]
