"""A peer that sets ``request`` on the client classes (OpenInference, Logfire) does not bypass
our loop.

Whichever was instrumented first, a call goes through the peer's wrapper once and through our
loop once: 500, 429, 500, 429 then 200 succeeds with our 5 attempts (the bare SDK's 3 would
fail), and every request the server received is an attempt span beneath the peer's one span.
Uninstrumenting either side, in either order, leaves the other working as it does alone, and
ours gone entirely.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..helpers import last_json_line, run_python
from .peers import PEERS, Peer, install

CLASS_PATCHING = ["openinference", "logfire"]
"""Peers that set ``request`` on ``OpenAI``/``AsyncOpenAI`` themselves."""

SCRIPT = """
import asyncio, json, sys
import openai
from openai._base_client import AsyncAPIClient, SyncAPIClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault
PEER_IMPORTS

order, off_order, flavour = sys.argv[1], sys.argv[2], sys.argv[3]
mode = "plain"
memory = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
originals = {c: dict(vars(c)).get("request") for c in (
    SyncAPIClient, AsyncAPIClient, openai.OpenAI, openai.AsyncOpenAI
)}
MESSAGES = [{"role": "user", "content": "hi"}]


def ours():
    OpenAIRetryInstrumentor().instrument(
        tracer_provider=tracer_provider, policy=RetryPolicy(initial_wait=0.01, max_wait=0.02)
    )


def ours_off():
    OpenAIRetryInstrumentor().uninstrument()


def peer():
    PEER_INSTRUMENT


def peer_off():
    PEER_UNINSTRUMENT


for step in (ours, peer) if order == "ours-first" else (peer, ours):
    step()


class MyClient(openai.OpenAI):
    pass


class MyAsyncClient(openai.AsyncOpenAI):
    pass


def phase(server, faults, subclass=False, client=None):
    memory.clear()
    server.script(*faults)
    before = server.request_count
    error = None
    try:
        if flavour == "async":
            cls = MyAsyncClient if subclass else openai.AsyncOpenAI
            async def call():
                client = cls(api_key="sk-x", base_url=server.base_url)
                await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            asyncio.run(call())
        else:
            cls = MyClient if subclass else openai.OpenAI
            client = client or cls(api_key="sk-x", base_url=server.base_url)
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    except openai.APIStatusError as exc:
        error = type(exc).__name__
    spans = memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    return {
        "requests": server.request_count - before,
        "error": error,
        "spans": [
            {
                "name": s.name,
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


FAILING = [Fault.server_error(500), Fault.rate_limit(retry_after_ms=5)] * 2
report = {}
with FakeOpenAIServer() as server:
    report["both"] = phase(server, FAILING)
    report["subclass"] = phase(server, FAILING, subclass=True)
    built = openai.OpenAI(api_key="sk-x", base_url=server.base_url)  # before either is off
    first, second = (ours_off, peer_off) if off_order == "ours-off-first" else (peer_off, ours_off)
    first()
    report["one-off"] = phase(server, [])
    report["one-off-failing"] = phase(server, [Fault.server_error(500)] * 2)
    if flavour == "sync":  # once through it (it may go around us once), then as a new client
        phase(server, [], client=built)
        report["built-before"] = phase(server, [Fault.server_error(500)] * 2, client=built)
    second()
    report["none"] = phase(server, [])

SDK_FUNCTIONS = (originals[SyncAPIClient], originals[AsyncAPIClient])


def plain(cls):
    # The SDK's own function, or nothing (a peer's uninstrument may leave the former).
    own = dict(vars(cls)).get("request")
    return own is originals[cls] or own in SDK_FUNCTIONS


print(json.dumps({**report, "restored": {c.__name__: plain(c) for c in originals}}))
"""


@pytest.fixture(scope="module", params=CLASS_PATCHING)
def peer(request: pytest.FixtureRequest) -> tuple[Peer, str]:
    chosen = PEERS[request.param]
    return chosen, os.fspath(install(chosen))


def run(peer: Peer, site: str, order: str, off_order: str, flavour: str) -> Any:
    script = (
        SCRIPT.replace("PEER_IMPORTS", peer.imports)
        .replace("PEER_INSTRUMENT", peer.instrument)
        .replace("PEER_UNINSTRUMENT", peer.uninstrument)
    )
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    return last_json_line(
        run_python("-c", script, order, off_order, flavour, env={"PYTHONPATH": path}, timeout=120)
    )


def attempts(phase: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in phase["spans"] if s["name"].startswith("attempt ")]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("off_order", ["ours-off-first", "peer-off-first"])
@pytest.mark.parametrize("order", ["ours-first", "peer-first"])
def test_the_retries_are_ours_beneath_the_peers_one_span(
    peer: tuple[Peer, str], order: str, off_order: str, flavour: str
) -> None:
    chosen, site = peer
    report = run(chosen, site, order, off_order, flavour)
    name, scope = chosen.span
    for key in ("both", "subclass"):  # the subclass is defined after both patches
        phase = report[key]
        assert phase["error"] is None, "4 failures then 200: our 5 attempts, not the SDK's 3"
        assert phase["requests"] == 5
        assert len(attempts(phase)) == 5, "attempt spans = requests received"
        others = [s for s in phase["spans"] if not s["name"].startswith("attempt ")]
        assert [(s["name"], s["scope"]) for s in others] == [(name, scope)], "one span per call"
        assert {s["parent"] for s in attempts(phase)} == {name}
        assert (others[0]["attempts"], others[0]["outcome"]) == (5, "success")

    alone = report["one-off"], report["one-off-failing"]
    if off_order == "ours-off-first":  # the peer alone, as if ours had never been there
        assert [s["name"] for s in alone[0]["spans"]] == [name]
        assert alone[1]["error"] is None and alone[1]["requests"] == 3, "the SDK's own retries"
        assert [(s["name"], s["attempts"]) for s in alone[1]["spans"]] == [(name, None)]
    else:  # ours alone: our span, our retries
        assert [s["scope"] for s in alone[0]["spans"]] == ["otel_openai_retry"] * 2
        assert alone[1]["error"] is None and alone[1]["requests"] == 3
        assert len(attempts(alone[1])) == 3
        assert not [s for s in alone[1]["spans"] if s["scope"] == scope]
    if flavour == "sync":
        assert report["built-before"]["spans"] == alone[1]["spans"], "a client built before"
    assert report["none"]["spans"] == [] and report["none"]["requests"] == 1
    assert all(report["restored"].values()), report["restored"]


ONE_CLIENT = """
import json, logging
import logfire, openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault

memory = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
logfire.configure(
    send_to_logfire=False, console=False, additional_span_processors=[SimpleSpanProcessor(memory)]
)
levels = []
log = logging.getLogger("otel_openai_retry")
log.setLevel(logging.INFO)
keep = logging.Handler()
keep.emit = lambda record: levels.append(record.levelname)
log.addHandler(keep)
MESSAGES = [{"role": "user", "content": "hi"}]

with FakeOpenAIServer() as server:
    client = openai.OpenAI(api_key="sk-x", base_url=server.base_url)
    logfire.instrument_openai(client)  # this client only, before we are instrumented
    OpenAIRetryInstrumentor().instrument(
        tracer_provider=tracer_provider, policy=RetryPolicy(initial_wait=0.01, max_wait=0.02)
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    memory.clear()
    server.script(*[Fault.server_error(500), Fault.rate_limit(retry_after_ms=5)] * 2)
    before = server.request_count
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    requests = server.request_count - before

spans = memory.get_finished_spans()
by_id = {s.context.span_id: s for s in spans}
print(json.dumps({
    "levels": levels,
    "requests": requests,
    "spans": [
        [s.name, by_id[s.parent.span_id].name if s.parent and s.parent.span_id in by_id else None]
        for s in sorted(spans, key=lambda s: s.start_time)
    ],
}))
"""


def test_logfire_on_one_client_built_before_us_is_reached_after_its_first_call() -> None:
    site = os.fspath(install(PEERS["logfire"]))
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    report = last_json_line(run_python("-c", ONE_CLIENT, env={"PYTHONPATH": path}, timeout=120))
    assert report["levels"] == ["INFO"], "the first call went around us, and we said so"
    assert report["requests"] == 5
    name = PEERS["logfire"].span[0]
    assert report["spans"] == [[name, None]] + [[f"attempt {n}", name] for n in range(1, 6)]
