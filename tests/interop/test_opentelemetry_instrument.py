"""``opentelemetry-instrument python app.py`` with OpenInference installed beside ours.

It loads every registered instrumentor, in the order their distributions are found: OpenInference
(on ``PYTHONPATH`` here) before ours, which is its users' default. OpenInference then sets its
wrapper of ``request`` on ``OpenAI`` before ours exists; ours must still run every attempt, beneath
OpenInference's one span, or the SDK's own 3 attempts come back (and four 500s in a row fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import clean_environment, last_json_line
from .peers import PEERS, install

pytestmark = pytest.mark.slow

APP = """
import json
import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_openai_retry.testing import FakeOpenAIServer, Fault

memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(provider)  # the instrumentors' tracers are proxies until now

with FakeOpenAIServer() as server:
    server.script(*[Fault.server_error(500)] * 4)
    client = openai.OpenAI(api_key="sk-x", base_url=server.base_url)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    requests = server.request_count

spans = memory.get_finished_spans()
by_id = {s.context.span_id: s for s in spans}
print(json.dumps({
    "reply": reply.choices[0].message.content,
    "requests": requests,
    "spans": [
        {
            "id": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
            "name": s.name,
            "scope": s.instrumentation_scope.name,
        }
        for s in spans
    ],
}))
"""


def test_openinference_loaded_first_by_opentelemetry_instrument_leaves_every_attempt_to_ours(
    tmp_path: Path,
) -> None:
    site = os.fspath(install(PEERS["openinference"]))
    app = tmp_path / "app.py"
    app.write_text(APP)
    command = Path(sys.executable).parent / "opentelemetry-instrument"
    done = subprocess.run(
        [os.fspath(command), sys.executable, os.fspath(app)],
        env=clean_environment(
            PYTHONPATH=site,
            OTEL_OPENAI_RETRY_INITIAL_WAIT="0.005",
            OTEL_OPENAI_RETRY_MAX_WAIT="0.01",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = last_json_line(done)
    assert report["reply"] == "Echo: hi"
    assert report["requests"] == 5, "our 5 attempts; the SDK's own 3 would have failed"
    spans = {s["id"]: s for s in report["spans"]}
    attempts = [s for s in spans.values() if s["name"].startswith("attempt ")]
    assert len(attempts) == 5, "attempt spans = requests received"
    assert len({s["parent"] for s in attempts}) == 1, "one call"
    ancestors = []
    parent = attempts[0]["parent"]
    while parent in spans:
        ancestors.append(spans[parent])
        parent = spans[parent]["parent"]
    assert ("ChatCompletion", "openinference.instrumentation.openai") in {
        (s["name"], s["scope"]) for s in ancestors
    }, json.dumps(report["spans"])
    ours = [s for s in spans.values() if s["scope"] == "otel_openai_retry"]
    assert ours == attempts, "no inference span of ours beside OpenInference's"
