"""Beside Langfuse: the attempts join its generation's trace, and reach Langfuse with the README's
filter.

Langfuse (from PyPI, ``peers.py``) is set up as a user sets it up, by the README's own block
(credentials and host from ``LANGFUSE_*``): its client makes the global tracer provider, ours
instruments on it, and ``langfuse.openai`` wraps the SDK. Its host is a loopback server standing
in for Langfuse's OTLP endpoint, so what the test reads is what Langfuse's own span processor,
export filter and exporter sent, with no network. Both instrumentation orders, sync and async,
one inference span per call and its GenAI metrics are ``test_companion``'s.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from ..helpers import last_json_line, run_python
from .peers import PEERS, install

README = Path(__file__).resolve().parents[2] / "README.md"

SCRIPT = """
import gzip, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault

received = []
MESSAGES = [{"role": "user", "content": "hi"}]


class Langfuse(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path.endswith("/otel/v1/traces"):
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    received.extend((span.name, scope.scope.name) for span in scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


host = ThreadingHTTPServer(("127.0.0.1", 0), Langfuse)
threading.Thread(target=host.serve_forever, daemon=True).start()
import os
os.environ["LANGFUSE_BASE_URL"] = f"http://127.0.0.1:{host.server_address[1]}"
exec(sys.argv[1])  # the README's block: the Langfuse client, on the global tracer provider
memory = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))
OpenAIRetryInstrumentor().instrument(policy=RetryPolicy(initial_wait=0.01, max_wait=0.02))
from langfuse.openai import openai
from langfuse.span_filter import is_default_export_span

with FakeOpenAIServer() as server:
    server.script(Fault.server_error(500), Fault.rate_limit(retry_after_ms=5))
    client = openai.OpenAI(api_key="sk-x", base_url=server.base_url)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    requests = server.request_count
    langfuse.flush()
    sent = sorted(received)  # what Langfuse's processor sent for the call
    spans = memory.get_finished_spans()
    memory.clear()
    OpenAIRetryInstrumentor().uninstrument()  # Langfuse alone: the SDK's own retries
    server.script(Fault.server_error(500), Fault.server_error(500))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    after = {
        "requests": server.request_count - requests,
        "spans": [(s.name, s.instrumentation_scope.name) for s in memory.get_finished_spans()],
        "ours": [k for s in memory.get_finished_spans() for k in s.attributes or {}
                 if k.startswith("openai_retry.")],
    }
by_id = {s.context.span_id: s for s in spans}
print(json.dumps({
    "requests": requests,
    "traces": len({s.context.trace_id for s in spans}),
    "spans": [
        {
            "name": s.name,
            "scope": s.instrumentation_scope.name,
            "parent": by_id[s.parent.span_id].name if s.parent and s.parent.span_id in by_id
            else None,
            "attempts": (s.attributes or {}).get("openai_retry.attempts"),
            "default_filter": is_default_export_span(s),
        }
        for s in sorted(spans, key=lambda s: s.start_time)
    ],
    "received": sent,
    "after": after,
}))
"""


def readme_block() -> str:
    """The Python block of the README's Langfuse paragraph."""
    section = README.read_text().split("**Langfuse**", 1)[1]
    found = re.search(r"```py\n(.*?)```", section, flags=re.DOTALL)
    assert found is not None, "the README shows Langfuse users their setting"
    return found.group(1)


@pytest.fixture(scope="module")
def site() -> str:
    return os.fspath(install(PEERS["langfuse"]))


def run(site: str, block: str) -> Any:
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "PYTHONPATH": path,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "LANGFUSE_SECRET_KEY": "sk-lf-test",
    }
    return last_json_line(run_python("-c", SCRIPT, block, env=env, timeout=120))


GENERATION = PEERS["langfuse"].span
ATTEMPTS = ["attempt 1", "attempt 2", "attempt 3"]


def test_the_attempts_are_in_the_generations_trace_and_reach_langfuse_with_the_readmes_filter(
    site: str,
) -> None:
    report = run(site, readme_block())
    assert report["requests"] == 3
    assert report["traces"] == 1, "one trace: the generation's"
    names = [(s["name"], s["scope"], s["parent"]) for s in report["spans"]]
    assert names == [(*GENERATION, None)] + [
        (name, "otel_openai_retry", GENERATION[0]) for name in ATTEMPTS
    ]
    assert report["spans"][0]["attempts"] == 3, "the retry summary on the generation"
    after = report["after"]  # our uninstrument(): Langfuse as it is alone
    assert (after["requests"], after["spans"], after["ours"]) == (3, [list(GENERATION)], [])
    assert report["received"] == sorted(
        [list(GENERATION)] + [[name, "otel_openai_retry"] for name in ATTEMPTS]
    ), "what Langfuse's processor sent to its host"


def test_langfuses_default_filter_keeps_the_generation_and_its_retry_summary_only(
    site: str,
) -> None:
    block = readme_block().replace("Langfuse(should_export_span=should_export_span)", "Langfuse()")
    report = run(site, block)
    assert report["requests"] == 3 and report["traces"] == 1
    assert [s["default_filter"] for s in report["spans"]] == [True, False, False, False]
    assert report["received"] == [list(GENERATION)], "the default leaves our attempts out"
    assert report["spans"][0]["attempts"] == 3
