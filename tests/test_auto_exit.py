"""What the auto import costs a short script at exit, and where its telemetry goes.

Each script runs in a fresh process (the auto import configures the global providers once per
process) and makes one call to the fake server; what it sends over OTLP is checked at a real
receiver on loopback, and how long it takes is compared with the same script run in the same test
without the auto import.
"""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any

from .e2e.otlp_receiver import OTLPReceiver
from .helpers import run_python
from .reliability.collectors import closed_port

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import openai
    if sys.argv[1] == "auto":
        import otel_openai_retry.auto
    from otel_openai_retry.testing import FakeOpenAIServer, Fault

    with FakeOpenAIServer() as server:
        server.script(Fault.server_error(500))
        client = openai.OpenAI(api_key="sk-exit", base_url=server.base_url)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    print(json.dumps({"reply": reply.choices[0].message.content, "done_at": time.time()}))
    """
)
FAST_RETRIES = {"OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.005", "OTEL_OPENAI_RETRY_MAX_WAIT": "0.02"}
SPANS = ["attempt 1", "attempt 2", "chat gpt-4o-mini"]


def run_script(mode: str, **env: str) -> tuple[dict[str, Any], float, str, str]:
    """The script's report, its whole run in seconds, its stdout and its stderr."""
    started = time.time()
    done = run_python("-c", SCRIPT, mode, env={**FAST_RETRIES, **env})
    ended = time.time()
    # Its report is its one line that starts so (a console exporter prints after it, at exit).
    line = next(line for line in done.stdout.splitlines() if line.startswith('{"reply"'))
    report: dict[str, Any] = json.loads(line)
    report["exit_s"] = ended - report["done_at"]
    return report, ended - started, done.stdout, done.stderr


def test_without_a_collector_a_script_exits_about_as_fast_as_without_the_import() -> None:
    """Before: the exporters retried the refused endpoint for ten seconds at exit, a line each."""
    _, plain_s, _, _ = run_script("plain")
    port = closed_port()
    report, auto_s, _, stderr = run_script(
        "auto", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://user:S3cretPw@127.0.0.1:{port}/?token=T0ken"
    )
    assert report["reply"] == "Echo: hi"
    # Compared with the same script without the import, measured in this test: the exit takes
    # less than that whole run, and the run, the SDK's imports included, less than three times
    # as long (it took ten seconds more when the exporters retried at exit).
    assert report["exit_s"] < plain_s, (report["exit_s"], plain_s, stderr)
    assert auto_s < 3 * plain_s, (auto_s, plain_s, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "telemetry not delivered at exit" in lines[0] and "unreachable" in lines[0]
    # Where, without what a URL may carry besides: no password, no query.
    assert f"http://127.0.0.1:{port} " in lines[0]
    assert "S3cretPw" not in stderr and "T0ken" not in stderr


def console_spans(stdout: str) -> list[str]:
    """The span names the SDK's console exporter printed (one JSON document per span)."""
    decoder, names, at = json.JSONDecoder(), [], 0
    text = stdout.strip()
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        if "context" in document and "name" in document:
            names.append(document["name"])
        while at < len(text) and text[at].isspace():
            at += 1
    return sorted(names)


def test_console_traces_and_no_metrics_send_nothing_over_otlp() -> None:
    with OTLPReceiver() as receiver:
        report, _, stdout, stderr = run_script(
            "auto",
            OTEL_TRACES_EXPORTER="console",
            OTEL_METRICS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        )
        received = receiver.received()
    assert report["reply"] == "Echo: hi"
    assert received == []  # the process has exited: all it would ever send was sent
    assert console_spans(stdout) == SPANS
    assert stderr == ""


def test_metrics_follow_their_own_variable() -> None:
    with OTLPReceiver() as receiver:
        run_script(
            "auto",
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        )
        received = receiver.received()
    assert {(r.transport, r.signal) for r in received} == {("http", "metrics")}


def test_otlp_written_out_is_the_default_http_protobuf_and_delivers_at_exit() -> None:
    """``OTEL_TRACES_EXPORTER=otlp`` is the spec's default written out: it must not switch to
    gRPC, as the SDK alone would; and the spans, left for the exit-time flush, all arrive."""
    with OTLPReceiver() as receiver:
        _, _, _, stderr = run_script(
            "auto",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        )
        transports = {(r.transport, r.signal) for r in receiver.received()}
        spans = sorted(span.name for span in receiver.spans())
    assert transports == {("http", "traces")}
    assert spans == SPANS
    assert stderr == ""


def test_providers_the_application_shut_down_itself_are_not_shut_down_again() -> None:
    """A second shutdown would only log the SDK's complaint at exit."""
    script = textwrap.dedent(
        """
        import otel_openai_retry.auto
        from opentelemetry import metrics, trace
        trace.get_tracer_provider().shutdown()
        metrics.get_meter_provider().shutdown()
        """
    )
    with OTLPReceiver() as receiver:
        done = run_python("-c", script, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint})
    assert done.stderr == ""
