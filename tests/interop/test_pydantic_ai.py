"""Beside pydantic-ai's instrumentation: its ``chat <model>`` span is the call's one inference span.

pydantic-ai (from PyPI, ``peers.py``) instruments its agents' model requests, not the SDK: an
agent on an ``OpenAIChatModel`` runs against the fake server in a fresh process, with ours, in
both instrumentation orders, sync (``run_sync``, ``run_stream_sync``) and async, through a 500 then
a 429, a dropped connection and a retried stream. Then each side is turned off, in either order.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..helpers import last_json_line, run_python
from .peers import PEERS, install

SCRIPT = """
import asyncio, json, sys
from openai._base_client import AsyncAPIClient, SyncAPIClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault
from pydantic_ai import Agent, InstrumentationSettings
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

order, off_order, flavour, mode = sys.argv[1:5]
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


def ours_off():
    OpenAIRetryInstrumentor().uninstrument()


def peer():
    Agent.instrument_all(
        InstrumentationSettings(tracer_provider=tracer_provider, meter_provider=meter_provider)
    )


def peer_off():
    Agent.instrument_all(False)


def run(agent, stream, settings):
    kwargs = {"model_settings": settings} if settings else {}
    try:
        if stream and flavour == "async":
            async def streamed():
                async with agent.run_stream("hi", **kwargs) as result:
                    return "".join([t async for t in result.stream_text(delta=True)])
            return asyncio.run(streamed())
        if stream:
            return "".join(agent.run_stream_sync("hi", **kwargs).stream_text(delta=True))
        if flavour == "async":
            return asyncio.run(agent.run("hi", **kwargs)).output
        return agent.run_sync("hi", **kwargs).output
    except ModelAPIError as exc:
        return type(exc).__name__


def metric_counts():
    counts = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                total = 0
                for point in metric.data.data_points:
                    total += point.count if isinstance(point, HistogramDataPoint) else point.value
                key = f"{scope.scope.name}:{metric.name}"
                counts[key] = counts.get(key, 0) + total
    return counts


def phase(server, faults, stream=False, **settings):
    memory.clear()
    before, metrics_before = server.request_count, metric_counts()
    server.script(*faults)
    output = run(agent, stream, settings)
    spans = memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    metrics = {k: v - metrics_before.get(k, 0) for k, v in metric_counts().items()}
    return {
        "output": output,
        "requests": server.request_count - before,
        "traces": len({s.context.trace_id for s in spans}),
        "metrics": {k: v for k, v in metrics.items() if v},
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
            }
            for s in sorted(spans, key=lambda s: s.start_time)
        ],
    }


for step in (ours, peer) if order == "ours-first" else (peer, ours):
    step()

report = {}
with FakeOpenAIServer() as server:
    provider = OpenAIProvider(base_url=server.base_url, api_key="sk-x")
    agent = Agent(OpenAIChatModel("gpt-4o-mini", provider=provider))
    report["retried"] = phase(server, [Fault.server_error(500), Fault.rate_limit(retry_after_ms=5)])
    report["dropped"] = phase(server, [Fault.drop()])
    report["stream"] = phase(server, [Fault.server_error(500)], stream=True)
    if mode == "plain":
        report["explicit"] = phase(server, [Fault.server_error(500)] * 3, max_retries=2)
        report["policy"] = phase(server, [Fault.server_error(500)] * 4)
        first, second = (ours_off, peer_off) if off_order == "ours-off-first" else (
            peer_off, ours_off
        )
        first()
        report["one-off"] = phase(server, [Fault.server_error(500)] * 2)
        second()
        report["none"] = phase(server, [])
report["restored"] = (SyncAPIClient.request, AsyncAPIClient.request) == originals
print(json.dumps(report))
"""

PYDANTIC_AI = PEERS["pydantic-ai"]
CHAT = PYDANTIC_AI.span[0]
SCOPE = PYDANTIC_AI.span[1]
OURS = "otel_openai_retry"


@pytest.fixture(scope="module")
def site() -> str:
    return os.fspath(install(PYDANTIC_AI))


def run(site: str, order: str, off_order: str, flavour: str, mode: str = "plain") -> Any:
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    return last_json_line(
        run_python(
            "-c", SCRIPT, order, off_order, flavour, mode, env={"PYTHONPATH": path}, timeout=120
        )
    )


def attempts(phase: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in phase["spans"] if s["name"].startswith("attempt ")]


def genai(phase: dict[str, Any], scope: str) -> set[str]:
    return {
        name.split(":", 1)[1] for name in phase["metrics"] if name.startswith(f"{scope}:gen_ai.")
    }


@pytest.mark.parametrize(
    ("order", "off_order", "flavour"),
    [
        # Each turning-off order after each instrumentation order, and each with both flavours:
        # pydantic-ai patches nothing of the SDK, so the orders do not interact beyond this.
        ("ours-first", "ours-off-first", "sync"),
        ("ours-first", "peer-off-first", "async"),
        ("peer-first", "peer-off-first", "sync"),
        ("peer-first", "ours-off-first", "async"),
    ],
)
def test_one_chat_span_per_model_request_with_every_attempt_beneath_it(
    site: str, order: str, off_order: str, flavour: str
) -> None:
    report = run(site, order, off_order, flavour)
    for key, requests in (("retried", 3), ("dropped", 2), ("stream", 2)):
        phase = report[key]
        assert phase["output"] == "Echo: hi"
        assert phase["requests"] == requests
        assert len(attempts(phase)) == requests, "attempt spans = requests received"
        client = [s for s in phase["spans"] if s["kind"] == "CLIENT"]
        assert [(s["name"], s["scope"]) for s in client] == [(CHAT, SCOPE)], "one inference span"
        assert {s["parent"] for s in attempts(phase)} == {CHAT}
        assert (client[0]["attempts"], client[0]["outcome"]) == (requests, "success")
        assert phase["traces"] == 1
        assert genai(phase, OURS) == set(PYDANTIC_AI.ours_genai), "only what pydantic-ai lacks"
        assert not genai(phase, OURS) & genai(phase, SCOPE), "no GenAI metric recorded twice"
        assert phase["metrics"][f"{OURS}:gen_ai.client.operation.duration"] == 1, "once a call"
        assert phase["metrics"][f"{SCOPE}:gen_ai.client.token.usage"] == 2, "input and output"
        assert phase["metrics"][f"{OURS}:openai_retry.client.failed_attempts"] == requests - 1
    assert report["stream"]["metrics"][f"{SCOPE}:gen_ai.client.operation.time_to_first_chunk"] == 1

    # pydantic-ai sets max_retries only when the run's model settings say so: then it is theirs.
    assert (report["explicit"]["output"], report["explicit"]["requests"]) == ("ModelServerError", 3)
    assert len(attempts(report["explicit"])) == 3
    assert (report["policy"]["output"], report["policy"]["requests"]) == ("Echo: hi", 5)

    alone = report["one-off"]
    assert alone["output"] == "Echo: hi" and alone["requests"] == 3
    if off_order == "ours-off-first":  # pydantic-ai alone, with the SDK's own retries
        assert [(s["name"], s["scope"]) for s in alone["spans"] if s["kind"] == "CLIENT"] == [
            (CHAT, SCOPE)
        ]
        assert not [s for s in alone["spans"] if s["scope"] == OURS or s["attempts"]]
        assert not [name for name in alone["metrics"] if name.startswith(f"{OURS}:")]
    else:  # ours alone: our span, our attempts, every GenAI metric ours
        assert not [s for s in alone["spans"] if s["scope"] == SCOPE]
        assert [s["name"] for s in alone["spans"] if s["kind"] == "CLIENT"] == [CHAT]
        assert len(attempts(alone)) == 3
        assert "gen_ai.client.token.usage" in genai(alone, OURS)
    none = report["none"]
    assert (none["spans"], none["requests"], none["output"]) == ([], 1, "Echo: hi")
    assert not [name for name in none["metrics"] if name.startswith(f"{OURS}:")]
    assert report["restored"] is True


@pytest.mark.parametrize("order", ["ours-first", "peer-first"])
def test_a_dropping_sampler_leaves_pydantic_ais_metrics_to_it(site: str, order: str) -> None:
    report = run(site, order, "ours-off-first", "sync", "sampled-out")
    for key, requests in (("retried", 3), ("dropped", 2), ("stream", 2)):
        phase = report[key]
        assert (phase["spans"], phase["requests"]) == ([], requests)
        assert genai(phase, OURS) == set(PYDANTIC_AI.ours_genai)
        assert "gen_ai.client.token.usage" in genai(phase, SCOPE)
