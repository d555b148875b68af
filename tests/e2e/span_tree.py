"""Rebuilding the retry span tree from spans that went over the wire, and checking it.

The same checks run on what the test OTLP receiver decoded and on what Jaeger's query API returns,
so "Jaeger shows the attempts" and "the exporter sent them" are the same statement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .otlp_receiver import AttributeValue, WireSpan

__all__ = ["EXPECTED", "OLD_NAME", "Expected", "WireCall", "check_call", "wire_calls"]

CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL
ERROR = Status.StatusCode.STATUS_CODE_ERROR

HEADER_PREFIX = "http.response.header."
ALLOWED_HEADERS = re.compile(r"retry-after|retry-after-ms|x-should-retry|x-ratelimit-[a-z0-9-]+")
"""The only response headers an attempt span may carry (design, Spans)."""
OLD_NAME = re.compile(r"(?<![\w-])retry(?:\.[a-z_]|_attempts_total|_sleep_duration)")
"""A name in the bare ``retry.`` namespace, or the Prometheus form of the two metrics this library
used to record there (``retry_`` + ``attempts_total`` or ``sleep_duration_seconds``): OpenTelemetry
reserves bare namespaces for its conventions, and ours live under ``openai_retry.``."""


@dataclass(frozen=True)
class Expected:
    """What one scenario of ``scenario_app.py`` must look like (3 attempts allowed)."""

    outcome: str
    statuses: tuple[int, ...]
    error_type: str | None = None
    retry_after_s: float | None = None


EXPECTED: dict[str, Expected] = {
    "clean": Expected("success", (200,)),
    "retried": Expected("success", (429, 429, 200), retry_after_s=0.05),
    "exhausted": Expected("exhausted", (503, 503, 503), error_type="openai.InternalServerError"),
}


@dataclass(frozen=True)
class WireCall:
    """One logical span and its attempt children, in order."""

    span: WireSpan
    attempts: list[WireSpan]

    def attr(self, key: str) -> AttributeValue | None:
        return self.span.attributes.get(key)


def wire_calls(spans: Sequence[WireSpan]) -> list[WireCall]:
    """Group spans into logical calls; every span must belong to exactly one of them."""
    logical = [s for s in spans if s.kind == CLIENT]
    calls = []
    for span in sorted(logical, key=lambda s: s.start_ns):
        children = sorted(
            (s for s in spans if s.parent_span_id == span.span_id), key=lambda s: s.start_ns
        )
        calls.append(WireCall(span, children))
    claimed = {s.span_id for c in calls for s in [c.span, *c.attempts]}
    strays = [(s.name, s.kind) for s in spans if s.span_id not in claimed]
    assert not strays, f"spans outside any logical call: {strays}"
    return calls


def _is_int(value: object) -> bool:
    return type(value) is int  # not bool, not float: "ints stay ints"


def _is_float(value: object) -> bool:
    return type(value) is float


def check_call(
    call: WireCall, expected: Expected, *, service: str, every_attempt: bool = True
) -> None:
    """The logical span, its attempt children and their attributes, with their types.

    ``every_attempt=False`` is ``OTEL_OPENAI_RETRY_ATTEMPT_SPANS=retried``: a call answered at
    its first attempt has no attempt span; a retried one has them all.
    """
    where = f"{call.span.name} ({expected.outcome}, trace {call.span.trace_id})"
    total_sleep = _check_logical(call.span, expected, service=service, where=where)
    for span in [call.span, *call.attempts]:
        old = sorted(key for key in span.attributes if OLD_NAME.match(key))
        assert not old, f"{where} / {span.name}: old bare names {old}"
    if not every_attempt and len(expected.statuses) == 1:
        assert call.attempts == [], f"{where}: a first-try call has no attempt span with `retried`"
        return
    names = [s.name for s in call.attempts]
    assert names == [f"attempt {n}" for n in range(1, len(expected.statuses) + 1)], (where, names)
    slept = 0.0
    previous_end = call.span.start_ns
    for number, (attempt, status) in enumerate(
        zip(call.attempts, expected.statuses, strict=True), start=1
    ):
        assert attempt.start_ns >= previous_end, f"{where}: {attempt.name} overlaps the one before"
        previous_end = attempt.end_ns
        slept += _check_attempt(
            attempt,
            call.span,
            number=number,
            status=status,
            last=number == len(expected.statuses),
            retry_after_s=expected.retry_after_s,
            where=f"{where} / {attempt.name}",
        )
    assert math.isclose(total_sleep, slept, rel_tol=1e-6, abs_tol=1e-9), (where, total_sleep, slept)


def _check_logical(span: WireSpan, expected: Expected, *, service: str, where: str) -> float:
    assert span.resource.get("service.name") == service, where
    assert span.is_root, f"{where}: the logical span has a parent"
    assert span.kind == CLIENT, where
    assert span.name == "chat gpt-4o-mini", where
    a = span.attributes
    assert a.get("gen_ai.operation.name") == "chat", (where, a)
    assert a.get("gen_ai.request.model") == "gpt-4o-mini", (where, a)
    attempts_made = a.get("openai_retry.attempts")
    assert _is_int(attempts_made), f"{where}: openai_retry.attempts={attempts_made!r} is not an int"
    assert attempts_made == len(expected.statuses), (where, a)
    assert a.get("openai_retry.outcome") == expected.outcome, (where, a)
    assert a.get("openai.api.type") == "chat_completions", (where, a)
    assert a.get("gen_ai.provider.name") == "openai", (where, a)
    if "openai_retry.total_throttle" in a:
        throttle = a["openai_retry.total_throttle"]
        assert _is_float(throttle) and isinstance(throttle, float) and throttle > 0, (where, a)
    assert not [k for k in a if k.startswith(HEADER_PREFIX)], f"{where}: headers on the call"
    if expected.error_type is None:
        assert span.status_code != ERROR, where
        assert "error.type" not in a, (where, a)
    else:
        assert span.status_code == ERROR, where
        assert a.get("error.type") == expected.error_type, (where, a)
    total_sleep = a.get("openai_retry.total_sleep")
    assert isinstance(total_sleep, float) and _is_float(total_sleep), (
        f"{where}: openai_retry.total_sleep={total_sleep!r} is not a float"
    )
    return total_sleep


def _check_attempt(
    attempt: WireSpan,
    parent: WireSpan,
    *,
    number: int,
    status: int,
    last: bool,
    retry_after_s: float | None,
    where: str,
) -> float:
    """One attempt span; returns the sleep that followed it."""
    b = attempt.attributes
    assert attempt.kind == INTERNAL, where
    assert attempt.trace_id == parent.trace_id, where
    assert attempt.parent_span_id == parent.span_id, where
    assert parent.start_ns <= attempt.start_ns <= attempt.end_ns <= parent.end_ns, where
    assert _is_int(b.get("openai_retry.attempt")), (where, b)
    assert b["openai_retry.attempt"] == number, (where, b)
    assert _is_int(b.get("http.response.status_code")), (where, b)
    assert b["http.response.status_code"] == status, (where, b)
    if number > 1:
        assert _is_int(b.get("http.request.resend_count")), (where, b)
        assert b["http.request.resend_count"] == number - 1, (where, b)
    else:
        assert "http.request.resend_count" not in b, (where, b)
    if status >= 400:
        assert attempt.status_code == ERROR, where
        assert isinstance(b.get("error.type"), str), (where, b)
        # Recorded as the conventions say: type and a safe description, no exception event.
        assert attempt.events == [], (where, attempt.events)
        error_type = b["error.type"]
        assert isinstance(error_type, str)
        assert attempt.status_message.startswith(f"{error_type}: HTTP {status}"), (
            where,
            attempt.status_message,
        )
    else:
        assert attempt.status_code != ERROR, where
        assert "error.type" not in b, (where, b)
    headers = {k[len(HEADER_PREFIX) :]: v for k, v in b.items() if k.startswith(HEADER_PREFIX)}
    for name, value in headers.items():
        assert ALLOWED_HEADERS.fullmatch(name), f"{where}: header {name!r} is not allowed"
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), (where, b)
    if status < 400:
        assert headers == {}, f"{where}: a successful attempt records no header"
    if retry_after_s is not None and status == 429:
        assert _is_float(b.get("openai_retry.retry_after")), (where, b)
        assert b["openai_retry.retry_after"] == retry_after_s, (where, b)
        assert headers.get("retry-after-ms") == [f"{retry_after_s * 1000:g}"], (where, b)
    if last:
        assert "openai_retry.sleep" not in b, f"{where}: the last attempt has no sleep after it"
        return 0.0
    sleep = b.get("openai_retry.sleep")
    assert isinstance(sleep, float) and _is_float(sleep), f"{where}: openai_retry.sleep={sleep!r}"
    assert sleep >= 0, (where, b)
    if retry_after_s is not None and status == 429:
        # Retry-After is honoured: never earlier, at most 10 % later.
        assert retry_after_s <= sleep <= retry_after_s * 1.1 + 1e-9, (where, sleep)
    return sleep
