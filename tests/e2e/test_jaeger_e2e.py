"""A real Jaeger v2, end to end: the application exports OTLP to it, the test reads the trace
back through Jaeger's HTTP query API and checks the parent/child tree and the attributes.

The Jaeger binary is built from the Go module proxy by scripts/build-jaeger.sh (once, cached in
.cache/); without Go these tests skip and say why (under CI=true they fail instead). Select them
with ``pytest -m e2e``; leave them out with ``pytest -m "not e2e"``.
"""

from __future__ import annotations

import pytest

from .conftest import Jaeger
from .harness import run_scenario, wait_until
from .jaeger_v1 import check_jaeger_trace, tags
from .span_tree import EXPECTED, check_call, wire_calls

pytestmark = pytest.mark.e2e

SCENARIOS = ("clean", "retried", "exhausted")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_jaeger_shows_every_attempt(jaeger: Jaeger, protocol: str) -> None:
    service = f"e2e-jaeger-{'grpc' if protocol == 'grpc' else 'http'}"
    result = run_scenario(
        *SCENARIOS, endpoint=jaeger.otlp_endpoint(protocol), protocol=protocol, service=service
    )
    assert [result[name]["requests"] for name in SCENARIOS] == [1, 3, 3]

    wait_until(
        lambda: (
            len(jaeger.query.traces(service)) == len(SCENARIOS)
            and sum(len(t["spans"]) for t in jaeger.query.traces(service)) == 10
        ),
        timeout=30,
        what=f"3 traces and 10 spans of {service} in Jaeger\n{jaeger.process.log_tail()}",
    )
    assert service in jaeger.query.services()

    # /api/traces, as the Jaeger UI reads them: one trace per logical call.
    traces = sorted(
        jaeger.query.traces(service),
        key=lambda t: min(s["startTime"] for s in t["spans"]),
    )
    for trace, name in zip(traces, SCENARIOS, strict=True):
        check_jaeger_trace(trace, EXPECTED[name], service=service)

    # The tag search from docs/viewing.md finds exactly the exhausted call.
    exhausted = jaeger.query.traces(service, {"openai_retry.outcome": "exhausted"})
    assert len(exhausted) == 1
    check_jaeger_trace(exhausted[0], EXPECTED["exhausted"], service=service)
    retried = jaeger.query.traces(service, {"http.response.status_code": "429"})
    assert [t["traceID"] for t in retried] == [traces[1]["traceID"]]
    with_a_retry = jaeger.query.traces(service, {"http.request.resend_count": "1"})
    assert sorted(t["traceID"] for t in with_a_retry) == sorted(t["traceID"] for t in traces[1:])

    # /api/v3/traces returns OTLP: the same tree checks as on the wire, span kinds and types too.
    calls = wire_calls(jaeger.query.otlp_spans(service))
    assert len(calls) == len(SCENARIOS)
    for call, name in zip(calls, SCENARIOS, strict=True):
        check_call(call, EXPECTED[name], service=service)
    assert [c.span.trace_id for c in calls] == [t["traceID"] for t in traces]


def test_jaeger_tags_keep_their_types(jaeger: Jaeger) -> None:
    """Ints stay ints in storage: a numeric tag search would not match a string "3"."""
    service = "e2e-jaeger-types"
    run_scenario("retried", endpoint=jaeger.otlp_endpoint("grpc"), protocol="grpc", service=service)
    wait_until(
        lambda: sum(len(t["spans"]) for t in jaeger.query.traces(service)) == 4,
        timeout=30,
        what="the retried trace in Jaeger",
    )
    (trace,) = jaeger.query.traces(service)
    typed = {key: kind for span in trace["spans"] for key, (kind, _) in tags(span).items()}
    assert typed["openai_retry.attempts"] == "int64"
    assert typed["openai_retry.attempt"] == "int64"
    assert typed["http.response.status_code"] == "int64"
    assert typed["http.request.resend_count"] == "int64"
    assert typed["openai_retry.total_sleep"] == "float64"
    assert typed["openai_retry.sleep"] == "float64"
    assert typed["openai_retry.retry_after"] == "float64"
    # An OTLP string array: Jaeger's v1 API shows it as a JSON-encoded string.
    assert typed["http.response.header.retry-after-ms"] == "string"


def test_jaeger_shows_retried_calls_only(jaeger: Jaeger) -> None:
    """With OTEL_OPENAI_RETRY_ATTEMPT_SPANS=retried the clean call is a lone span in Jaeger and
    the retried one still shows its three attempts, under the logical span, in order."""
    service = "e2e-jaeger-retried-only"
    run_scenario(
        "clean",
        "retried",
        endpoint=jaeger.otlp_endpoint("grpc"),
        protocol="grpc",
        service=service,
        extra_env={"OTEL_OPENAI_RETRY_ATTEMPT_SPANS": "retried"},
    )
    wait_until(
        lambda: sum(len(t["spans"]) for t in jaeger.query.traces(service)) == 5,
        timeout=30,
        what=f"1 + 4 spans of {service} in Jaeger\n{jaeger.process.log_tail()}",
    )
    clean, retried = sorted(
        jaeger.query.traces(service), key=lambda t: min(s["startTime"] for s in t["spans"])
    )
    assert [s["operationName"] for s in clean["spans"]] == ["chat gpt-4o-mini"]
    (root,) = clean["spans"]
    assert tags(root)["openai_retry.attempts"] == ("int64", 1)
    check_jaeger_trace(retried, EXPECTED["retried"], service=service)
    calls = wire_calls(jaeger.query.otlp_spans(service))
    for call, name in zip(calls, ("clean", "retried"), strict=True):
        check_call(call, EXPECTED[name], service=service, every_attempt=False)
