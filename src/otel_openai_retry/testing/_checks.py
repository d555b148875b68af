"""The checks behind the plugin's verdicts: what the fake server received against what the
library's spans and metrics say, in one pass each.

Each check reads the server's journal and the finished spans as they are when it is called; a
call still open (a stream not yet read to its end) is reported, not guessed at. The rules are
written here again, from the design, rather than taken from the library's own code: a verdict
that asked the code under test what is right could never catch it out.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from .._policy import RetryPolicy
from .._semconv import CALL_RETRIES, FAILED_ATTEMPTS, OUTCOME, SLEEP
from ._calls import CallSpans, group_calls, orphan_attempts
from ._state import RecordedRequest
from ._verdict import Verdict

__all__ = [
    "Evidence",
    "attempts_match_requests",
    "budget_kept",
    "retry_after_honoured",
    "should_retry_false_obeyed",
]

_HEADER = "http.response.header."
_HINTS = ("retry-after-ms", "retry-after")
_BUDGET_WINDOW = 10.0
_BUDGET_RESERVE = 100
"""The budget's sliding window (s) and the retries it always allows in one: ten per second."""
_DATE_SLACK = 1.0
"""An HTTP date has whole seconds: a date hint is honoured to within one."""


@dataclass(frozen=True)
class Evidence:
    """What one test left behind: the server's journal, the spans, the metrics, the policy."""

    requests: Sequence[RecordedRequest]
    spans: Sequence[ReadableSpan]
    policy: RetryPolicy
    metrics: Sequence[tuple[str, Any]]
    """Every metric data point, with its metric's name."""

    def metric_points(self, name: str) -> list[Any]:
        return [point for metric, point in self.metrics if metric == name]

    @property
    def calls(self) -> list[CallSpans]:
        return group_calls(self.spans)

    @property
    def every_attempt_has_a_span(self) -> bool:
        return self.policy.attempt_spans == "all"


def _attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def _header(span: ReadableSpan, name: str) -> str | None:
    value = _attrs(span).get(_HEADER + name)
    if isinstance(value, (tuple, list)) and value:
        return str(value[0])
    return value if isinstance(value, str) else None


def _where(call: CallSpans, attempt: ReadableSpan) -> str:
    return f"{call.name!r}, {attempt.name}"


def _hint_seconds(span: ReadableSpan) -> tuple[float, float] | None:
    """The wait the server asked for in this attempt's answer, and the slack to allow."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = _header(span, name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        return (value / divisor, 1e-6) if math.isfinite(value) and value >= 0 else None
    raw = _header(span, "retry-after")
    if raw is None or span.end_time is None:
        return None
    try:
        date = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, date.timestamp() - span.end_time / 1e9), _DATE_SLACK


def _server_headers(request: RecordedRequest) -> dict[str, str]:
    return dict(request.fault.headers)


def _sent_hint(request: RecordedRequest) -> bool:
    headers = _server_headers(request)
    return request.fault.retry_after_date_in is not None or any(h in headers for h in _HINTS)


def _seen_hint(span: ReadableSpan) -> bool:
    return any(_header(span, name) is not None for name in _HINTS)


def retry_after_honoured(ev: Evidence) -> Verdict:
    """After every answer with ``retry-after-ms``/``retry-after``, the client waited at least
    that long before its next attempt (or gave up, when the hint was over ``max_retry_after``),
    and every hinted answer the server sent is on an attempt span."""
    findings: list[str] = []
    for call in ev.calls:
        for index, attempt in enumerate(call.attempts):
            hint = _hint_seconds(attempt)
            if hint is None:
                continue
            wanted, slack = hint
            followed = index + 1 < len(call.attempts)
            slept = _attrs(attempt).get(SLEEP)
            if followed and wanted > ev.policy.max_retry_after + slack:
                findings.append(
                    f"{_where(call, attempt)}: the server asked for {wanted:g} s, over "
                    f"max_retry_after ({ev.policy.max_retry_after:g} s), and the call retried"
                )
            elif followed and not isinstance(slept, (int, float)):
                findings.append(f"{_where(call, attempt)}: retried with no {SLEEP} recorded")
            elif followed and isinstance(slept, (int, float)) and slept + slack < wanted:
                findings.append(
                    f"{_where(call, attempt)}: the server asked for {wanted:g} s, "
                    f"the client slept {slept:g} s"
                )
    sent = sum(1 for request in ev.requests if _sent_hint(request))
    seen = sum(1 for call in ev.calls for attempt in call.attempts if _seen_hint(attempt))
    if ev.every_attempt_has_a_span and sent != seen:
        findings.append(
            f"the server sent {sent} answer(s) with a retry hint; attempt spans record {seen}"
        )
    return Verdict.of("Retry-After honoured", findings)


def should_retry_false_obeyed(ev: Evidence) -> Verdict:
    """No attempt followed an answer with ``x-should-retry: false``, and every such answer the
    server sent is on the last attempt span of a call."""
    findings: list[str] = []
    seen = 0
    for call in ev.calls:
        for index, attempt in enumerate(call.attempts):
            if (_header(attempt, "x-should-retry") or "").strip().lower() != "false":
                continue
            seen += 1
            if index + 1 < len(call.attempts) or SLEEP in _attrs(attempt):
                findings.append(
                    f"{_where(call, attempt)}: answered x-should-retry: false, and retried"
                )
    sent = sum(
        1
        for request in ev.requests
        if _server_headers(request).get("x-should-retry", "").strip().lower() == "false"
    )
    if ev.every_attempt_has_a_span and sent != seen:
        findings.append(
            f"the server answered x-should-retry: false {sent} time(s); attempt spans record {seen}"
        )
    return Verdict.of("no retry after x-should-retry: false", findings)


def _model(request: RecordedRequest) -> str:
    body = request.body
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def budget_kept(ev: Evidence) -> Verdict:
    """Per model, over any 10 s, the retries the server received stayed within the policy's
    budget (``budget`` times the requests, plus the reserve of ten a second); a call the budget
    stopped sent nothing more."""
    findings: list[str] = []
    notes: list[str] = []
    if ev.policy.budget <= 0:
        notes.append("the policy has no budget (budget=0)")
    else:
        by_model: dict[str, list[RecordedRequest]] = {}
        for request in ev.requests:
            by_model.setdefault(_model(request), []).append(request)
        for model, requests in by_model.items():
            for end, request in enumerate(requests):
                if not request.retry_count:
                    continue
                window = [
                    r for r in requests[: end + 1]
                    if r.received_at > request.received_at - _BUDGET_WINDOW
                ]  # fmt: skip
                retries = sum(1 for r in window if r.retry_count)
                allowed = ev.policy.budget * len(window) + _BUDGET_RESERVE
                if retries > allowed:
                    findings.append(
                        f"model {model or '(none)'!r}: {retries} retries among {len(window)} "
                        f"requests within {_BUDGET_WINDOW:g} s; the budget allows {allowed:g}"
                    )
                    break
    for call in ev.calls:
        if _attrs(call.span).get(OUTCOME) == "budget_exhausted" and call.attempts:
            last = call.attempts[-1]
            if SLEEP in _attrs(last):
                findings.append(f"{_where(call, last)}: the budget stopped the call after a sleep")
    return Verdict.of("retry budget kept", findings, notes)


def _metric_total(points: Iterable[Any], field: str) -> float:
    return sum(float(getattr(point, field, 0) or 0) for point in points)


def attempts_match_requests(ev: Evidence) -> Verdict:
    """One attempt span per request the server received, no more, no fewer; the calls'
    ``openai_retry.attempts`` and the retry metrics add up to the same."""
    findings: list[str] = []
    received = len(ev.requests)
    calls = ev.calls
    open_attempts = orphan_attempts(ev.spans)
    if open_attempts:
        findings.append(
            f"{len(open_attempts)} attempt span(s) belong to a call that has not ended "
            "(a stream neither read to its end nor closed?)"
        )
    spans = sum(len(call.attempts) for call in calls) + len(open_attempts)
    if not ev.every_attempt_has_a_span:  # a call that succeeded at once has no attempt span
        spans += sum(1 for call in calls if not call.attempts and call.attempt_count == 1)
    if spans != received:
        findings.append(f"the server received {received} request(s); there are {spans} attempt(s)")
    for call in calls:
        if ev.every_attempt_has_a_span and call.attempt_count != len(call.attempts):
            findings.append(
                f"{call.name!r}: openai_retry.attempts = {call.attempt_count}, "
                f"with {len(call.attempts)} attempt span(s)"
            )
    said = sum(call.attempt_count for call in calls)
    if not open_attempts and said != received:
        findings.append(
            f"the calls' openai_retry.attempts add up to {said}; the server received {received}"
        )
    retries = ev.metric_points(CALL_RETRIES)
    if retries and not open_attempts:
        counted = int(_metric_total(retries, "count") + _metric_total(retries, "sum"))
        if counted != received:
            findings.append(
                f"{CALL_RETRIES}: calls + retries = {counted}; the server received {received}"
            )
    failed = int(_metric_total(ev.metric_points(FAILED_ATTEMPTS), "value"))
    failed_spans = sum(
        1
        for call in calls
        for attempt in call.attempts
        if attempt.status.status_code is StatusCode.ERROR
    )
    if ev.every_attempt_has_a_span and failed != failed_spans:
        findings.append(f"{FAILED_ATTEMPTS} = {failed}; {failed_spans} attempt span(s) failed")
    return Verdict.of("attempt spans equal requests received", findings)
