"""The relations between a bare run and ours that must hold for every script.

Each is a separate function with its own assertion, so that hypothesis, which tells failures
apart by where they are raised, shrinks and reports each broken relation on its own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from otel_openai_retry.testing import RecordedRequest

from .calls import (
    CONTENT,
    FILE_BYTES,
    FILENAME,
    MESSAGES,
    MODEL,
    PURPOSE,
    RAW_KINDS,
    SECRETS,
    UPLOAD_KINDS,
    Outcome,
    Scenario,
)


class SpanLedger(SpanProcessor):
    """Every span started and every span ended, by id: a span that never ends is never
    exported, so only a processor that sees ``on_start`` can prove it exists."""

    def __init__(self) -> None:
        self.started: dict[int, str] = {}
        self.ended: set[int] = set()
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        with self._lock:
            self.started[span.get_span_context().span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        assert context is not None
        with self._lock:
            self.ended.add(context.span_id)

    def clear(self) -> None:
        with self._lock:
            self.started.clear()
            self.ended.clear()

    def unended(self) -> list[str]:
        with self._lock:
            return [name for sid, name in self.started.items() if sid not in self.ended]


class LogRecords(logging.Handler):
    """Every record our library (and the OpenTelemetry SDK) logs, at any level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        texts = []
        for record in self.records:
            parts = [record.getMessage()]
            if record.exc_info:
                parts.append(self._formatter.formatException(record.exc_info))
            if record.stack_info:
                parts.append(record.stack_info)
            texts.append("\n".join(parts))
        return texts


@dataclass(frozen=True)
class OursRun:
    """Everything ours left behind for one scenario, read once the call has finished."""

    scenario: Scenario
    bare: Outcome
    ours: Outcome
    received: list[RecordedRequest]
    spans: Sequence[ReadableSpan]
    unended: list[str]
    logs: list[str]
    allowed: int
    """Attempts ours may make: the explicit ``max_retries`` + 1, else the policy's."""
    metrics: str
    """Every metric point's attributes, as text."""
    sdk_class: Callable[[], type[BaseException] | None]
    """What the SDK raises for the final answer ours got (None: it succeeds); asked on demand,
    as it may take a run of the bare SDK."""

    def where(self) -> str:
        faults = [r.fault for r in self.received]
        return (
            f"{self.scenario!r}: bare {self.bare!r}, ours {self.ours!r}, "
            f"server received {len(self.received)}: {faults}"
        )


def attempt_spans(spans: Iterable[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("attempt ")]


def logical_spans(spans: Iterable[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if not s.name.startswith("attempt ")]


# -- the relations -------------------------------------------------------------------------------


def ours_succeeds_where_bare_succeeds(run: OursRun) -> None:
    """Save where the contract gives up at once: the server asked for a wait longer than the
    policy's ``max_retry_after`` (``retry_after_too_long``), where the SDK disobeys a hint over
    60 s and retries within seconds; or the account has no credit left (``quota_exhausted``),
    which the SDK retries in vain against the real API (a script can make a retry succeed)."""
    if run.bare.error is None and not _gave_up_by_contract(run):
        assert run.ours.error is None, f"the bare SDK succeeded, ours failed: {run.where()}"


_GIVEN_UP_BY_CONTRACT = ("retry_after_too_long", "quota_exhausted")


def _gave_up_by_contract(run: OursRun) -> bool:
    return any(
        (span.attributes or {}).get("openai_retry.outcome") in _GIVEN_UP_BY_CONTRACT
        for span in logical_spans(run.spans)
    )


def ours_raises_the_sdk_class(run: OursRun) -> None:
    if run.ours.error is None:
        return
    got = type(run.ours.error)
    expected = run.sdk_class()
    assert expected is not None, (
        f"ours raised {got.__qualname__} where the SDK, given the same final answer, succeeds: "
        f"{run.where()}"
    )
    assert got is expected, f"ours raised {got!r}, the SDK raises {expected!r}: {run.where()}"


def every_body_is_the_callers(run: OursRun) -> None:
    for number, record in enumerate(run.received, 1):
        if run.scenario.kind in UPLOAD_KINDS:
            form = record.form
            file = form.get("file")
            purpose = form.get("purpose")
            assert file is not None and purpose is not None, (number, form, run.where())
            assert (file.filename, file.data) == (FILENAME, FILE_BYTES), (
                f"request {number} uploaded {len(file.data)} bytes {file.data[:40]!r}, "
                f"the caller's file has {len(FILE_BYTES)}: {run.where()}"
            )
            assert purpose.text == PURPOSE, run.where()
            continue
        expected: dict[str, object] = {"model": MODEL, "messages": MESSAGES}
        if run.scenario.kind == "chat_stream":
            expected["stream"] = True
        assert record.body == expected, (number, record.raw_body[:200], run.where())


def requests_within_attempts_allowed(run: OursRun) -> None:
    assert len(run.received) <= run.allowed, run.where()


def one_attempt_span_per_request(run: OursRun) -> None:
    attempts = attempt_spans(run.spans)
    assert len(attempts) == len(run.received), (
        f"{len(attempts)} attempt spans for {len(run.received)} requests received: {run.where()}"
    )


def every_span_ended(run: OursRun) -> None:
    assert not run.unended, f"spans started and never ended: {run.unended}: {run.where()}"


def logical_span_tells_the_callers_outcome(run: OursRun) -> None:
    logical = logical_spans(run.spans)
    assert len(logical) == 1, ([s.name for s in logical], run.where())
    span = logical[0]
    attributes = dict(span.attributes or {})
    if run.ours.error is None:
        assert span.status.status_code is not StatusCode.ERROR, (attributes, run.where())
        return
    assert span.status.status_code is StatusCode.ERROR, (attributes, run.where())
    assert attributes.get("openai_retry.outcome") != "success", (attributes, run.where())


def retries_taken_is_true(run: OursRun) -> None:
    if run.scenario.kind in RAW_KINDS and run.ours.error is None:
        assert run.ours.retries_taken == len(run.received) - 1, run.where()


def no_secret_or_content_in_telemetry(run: OursRun) -> None:
    """Capture is off: no header value and nothing of the prompt, the completion or the file."""
    texts = [("span", _span_text(span)) for span in run.spans]
    texts.extend(("log record", text) for text in run.logs)
    texts.append(("metrics", run.metrics))
    for secret in (*SECRETS, *CONTENT):
        for where, text in texts:
            assert secret not in text, f"{secret!r} in a {where}: {text[:2000]}\n{run.where()}"


def _span_text(span: ReadableSpan) -> str:
    parts = [span.name, span.status.description or "", json.dumps(dict(span.attributes or {}))]
    for event in span.events:
        parts.append(event.name)
        parts.append(json.dumps(dict(event.attributes or {})))
    for link in span.links:
        parts.append(json.dumps(dict(link.attributes or {})))
    return "\n".join(parts)


def metrics_text(reader: InMemoryMetricReader) -> str:
    data = reader.get_metrics_data()
    if data is None:
        return ""
    parts = []
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    parts.append(json.dumps(dict(point.attributes or {})))
    return "\n".join(parts)


Relation = Callable[[OursRun], None]
RELATIONS: tuple[Relation, ...] = (
    no_secret_or_content_in_telemetry,
    every_body_is_the_callers,
    requests_within_attempts_allowed,
    one_attempt_span_per_request,
    every_span_ended,
    ours_succeeds_where_bare_succeeds,
    ours_raises_the_sdk_class,
    logical_span_tells_the_callers_outcome,
    retries_taken_is_true,
)
"""Checked in this order; the first that breaks is the example's failure."""
