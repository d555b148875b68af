"""The chaos run: many concurrent calls against seeded random faults, then an exact audit.

The fake server pops one scripted fault per request in arrival order, so a seeded list of faults
(:func:`chaos_faults`) gives the requested fault rates while the interleaving of 200 concurrent
calls stays free. Every call runs under a parent span of its own (from a provider that exports
nothing), which is how the audit finds each call's logical span; the server's journal is matched
to calls by the prompt, which is unique per call and echoed in the answer.

The audit (:func:`audit`) checks, call by call, what a user would check: the right answer or the
right ``openai`` exception, one attempt span per request with the error that request caused, the
retry summary on the logical span, and that each ``openai_retry.sleep`` is the gap to the next
attempt. Then the totals: attempt spans = requests = calls + the sum of
``openai_retry.client.call.retries``, failed attempts by ``error.type`` = the failures served,
every span that started has ended, and the retry delays add up to the sleeps and pacing waits.

About "the gap": between one attempt's failure and the next attempt's start there is the sleep,
plus any pacing wait (``openai_retry.throttle`` on the next attempt, when the policy paces), plus
the time the event loop or the GIL takes to resume the caller. The last part belongs to the machine,
not the library: at 200 concurrent calls on 2 cores it reaches tens of milliseconds now and then,
and hundreds when another process competes for the cores. So no bound here is a constant: each is
a quantity measured in the same run. A :class:`SchedulingProbe` runs alongside, sleeping 1 ms at
a time and recording when it wakes.

- On an event loop, the loop is one thread: whenever it is busy or the process is descheduled, the
  probe cannot wake either, and its wake-ups spread apart. So the part of a gap beyond the sleep
  and the pacing wait must be covered by the stalls the probe saw during that very gap (the time
  its wake-ups were further apart than its period), within the probe's resolution (one period
  per wait).
- Threads wake in no such order (whichever gets the GIL), so the probe's stalls at the moment say
  little; but a thread meets the GIL twice between a failure and its next attempt (to finish the
  failed attempt's bookkeeping, then to wake from the sleep), each wait no longer than the worst
  the probe, a thread in the same contest, suffered in the run: the largest error is held to twice
  that.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from otel_openai_retry import RetryPolicy
from otel_openai_retry.testing import Fault, RecordedRequest

from ..helpers import Call, attrs, calls, counter_by_error, histogram_totals

SEED = 20_240_607
CALLS = 2_000
CONCURRENCY = 200
LATENCY_S = (0.5, 1.5)
"""Seeded server think time for every answer (errors and drops included): what keeps 200
concurrent calls from saturating 2 cores, as a real API's latency does."""
CLIENT_TIMEOUT_S = 3.0
"""The client's per-attempt timeout, well above the latency: only a ``timeout`` fault hits it."""
HANG_S = 6.0
"""How long a ``timeout`` fault makes the server wait before answering: far beyond the client's
timeout."""
PROBE_PERIOD_S = 0.001
"""The probe's sleep, hence its resolution: a stall shorter than this can pass between two
wake-ups unseen."""
CLOCK_SKEW_S = 0.001
"""Spans are timed on the wall clock, sleeps on the monotonic one: a recorded sleep may look this
much longer than its gap without being wrong."""
RAMP_S = 0.005
"""The first 200 calls start this far apart (a second in all), not in one burst of 500 ms of
CPU that would stall everything at the start."""

CHAOS_POLICY = RetryPolicy(
    max_attempts=3, initial_wait=0.004, max_wait=0.02, max_retry_after=1.0, adaptive=False
)
"""Small waits so the run takes seconds; three attempts, so that some calls exhaust them.

Adaptive pacing is off: against faults injected at a fixed 20 % whatever the send rate, its AIMD
schedule settles near 1.67 * (1 - p) / p = 7 requests/s (by design: a real server that 429s a
fifth of all requests is overloaded), which would stretch 2,800 requests over minutes. The retry
budget stays at its default, so a call may also end ``budget_exhausted``; the audit accepts that
only when the last failure was one the budget governs (not a 429) and attempts were left."""

# kind -> (probability, attempt span's error.type, exception class the caller gets)
KINDS: dict[str, tuple[float, str | None, type[Exception] | None]] = {
    "429": (0.20, "openai.RateLimitError", openai.RateLimitError),
    "500": (0.05, "openai.InternalServerError", openai.InternalServerError),
    "drop": (0.02, "openai.APIConnectionError", openai.APIConnectionError),
    "timeout": (0.01, "openai.APITimeoutError", openai.APITimeoutError),
    "400": (0.01, "openai.BadRequestError", openai.BadRequestError),
    "ok": (0.71, None, None),
}
RETRYABLE_KINDS = frozenset({"429", "500", "drop", "timeout"})


RATE_LIMIT_HEADERS = (
    ("x-ratelimit-limit-requests", "1000"),
    ("x-ratelimit-remaining-requests", "0"),
    ("x-ratelimit-reset-requests", "1s"),
)
"""What OpenAI sends with a 429: here, a refill rate of 1,000 requests/s for the pacer."""


def chaos_faults(
    seed: int,
    count: int,
    latency: tuple[float, float] = LATENCY_S,
    *,
    rate_limit_headers: bool = False,
) -> list[Fault]:
    """``count`` faults at the issue's rates: 20 % 429 (hint of 1-5 ms), 5 % 500, 2 % dropped
    connection, 1 % timeout, 1 % 400, the rest answered normally; each after a think time.
    With ``rate_limit_headers``, each 429 also carries OpenAI's ``x-ratelimit-*`` headers."""
    rng = random.Random(seed)
    faults = []
    for _ in range(count):
        x = rng.random()
        think = rng.uniform(*latency)
        if x < 0.20:
            fault = Fault.rate_limit(retry_after_ms=rng.randint(1, 5))
            if rate_limit_headers:
                fault = dataclasses.replace(fault, headers=fault.headers + RATE_LIMIT_HEADERS)
        elif x < 0.25:
            fault = Fault.server_error(500)
        elif x < 0.27:
            fault = Fault.drop()
        elif x < 0.28:
            fault = Fault.delay(HANG_S)
        elif x < 0.29:
            fault = Fault.status(400)
        else:
            fault = Fault.ok()
        if fault.delay_s == 0:
            fault = dataclasses.replace(fault, delay_s=think)
        faults.append(fault)
    return faults


def fault_kind(fault: Fault) -> str:
    if fault.drop_connection:
        return "drop"
    if fault.delay_s >= HANG_S:
        return "timeout"
    if fault.status_code in (429, 500, 400):
        return str(fault.status_code)
    assert fault.status_code == 200 and not fault.headers, fault
    return "ok"


def prompt(index: int) -> str:
    return f"chaos call {index:05d}"


@dataclass
class ChaosOutcome:
    """What one call returned or raised, and the id of the parent span it ran under."""

    index: int
    parent_span_id: int
    result: openai.types.chat.ChatCompletion | None = None
    error: BaseException | None = None


class SpanLedger(SpanProcessor):
    """Counts spans started and ended, to prove that every span that began has ended."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        with self._lock:
            self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended += 1


class SchedulingProbe:
    """Sleeps ``PROBE_PERIOD_S`` over and over (as a task, or as a thread) and records each
    wake-up: (time due, time woken), on the span clock (``time.time_ns`` as seconds)."""

    def __init__(self) -> None:
        self.due: list[float] = []
        self.woke: list[float] = []
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def _record(self, due: float) -> None:
        self.due.append(due)
        self.woke.append(time.time_ns() / 1e9)

    async def _run_async(self) -> None:
        while not self._stop.is_set():
            due = time.time_ns() / 1e9 + PROBE_PERIOD_S
            await asyncio.sleep(PROBE_PERIOD_S)
            self._record(due)

    def _run_thread(self) -> None:
        while not self._stop.is_set():
            due = time.time_ns() / 1e9 + PROBE_PERIOD_S
            time.sleep(PROBE_PERIOD_S)
            self._record(due)

    def start_task(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run_async())

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run_thread, name="probe", daemon=True)
        self._thread.start()

    async def stop_task(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def stalled_within(self, start: float, end: float) -> float:
        """How long the scheduler was measurably unavailable between ``start`` and ``end``: the
        sum, over the probe's consecutive wake-ups around that stretch, of how much further apart
        they were than the probe's period."""
        woke = self.woke
        first = max(bisect.bisect_left(woke, start) - 1, 0)
        last = min(bisect.bisect_right(woke, end), len(woke) - 1)
        return sum(max(0.0, woke[i + 1] - woke[i] - PROBE_PERIOD_S) for i in range(first, last))

    @property
    def largest(self) -> float:
        return max((w - d for d, w in zip(self.due, self.woke, strict=True)), default=0.0)


@dataclass
class ChaosFigures:
    """The run's totals, for the report."""

    mode: str
    calls: int
    requests: int
    attempt_spans: int
    logical_spans: int
    wall_s: float
    metric_sum: int = 0
    successes: int = 0
    sleep_errors: list[float] = field(default_factory=list)
    """Per sleep: gap between the attempt spans - openai_retry.sleep - openai_retry.throttle."""
    unexplained: list[float] = field(default_factory=list)
    """The same, less the scheduler's stalls the probe saw during that gap and the probe's
    resolution: above 0, a delay the machine does not explain (checked on event loops only)."""
    probe_largest_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def largest_sleep_error_s(self) -> float:
        return max(self.sleep_errors, default=0.0)

    @property
    def largest_unexplained_s(self) -> float:
        return max(self.unexplained, default=0.0)

    def line(self) -> str:
        ordered = sorted(self.sleep_errors)

        def ms(value: float) -> str:
            return f"{value * 1000:.1f}ms"

        p50 = ordered[len(ordered) // 2] if ordered else 0.0
        p99 = ordered[len(ordered) * 99 // 100] if ordered else 0.0
        return (
            f"chaos run ({self.mode}): calls={self.calls} requests={self.requests} "
            f"attempt_spans={self.attempt_spans} logical_spans={self.logical_spans} "
            f"openai_retry.attempts sum={self.metric_sum} sleeps={len(ordered)} "
            f"sleep error: largest={ms(self.largest_sleep_error_s)} p99={ms(p99)} "
            f"p50={ms(p50)} smallest={ms(ordered[0] if ordered else 0.0)}, "
            f"largest beyond the scheduler's stalls={ms(self.largest_unexplained_s)} "
            f"(probe's largest delay {ms(self.probe_largest_s)}); wall={self.wall_s:.1f}s; "
            f"successes={self.successes} errors={dict(sorted(self.errors.items()))} "
            f"outcomes={dict(sorted(self.outcomes.items()))} "
            f"faults served={dict(sorted(self.faults.items()))}"
        )


def _parents() -> TracerProvider:
    """Parent spans with real ids that go nowhere: only their ids are used."""
    return TracerProvider()


async def run_async_calls(
    client: openai.AsyncOpenAI, count: int = CALLS, concurrency: int = CONCURRENCY
) -> list[ChaosOutcome]:
    tracer = _parents().get_tracer("chaos")
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> ChaosOutcome:
        if index < concurrency:
            await asyncio.sleep(index * RAMP_S)
        async with gate:
            with tracer.start_as_current_span(f"call {index}") as parent:
                outcome = ChaosOutcome(index, parent.get_span_context().span_id)
                try:
                    outcome.result = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": prompt(index)}],
                    )
                except Exception as exc:
                    outcome.error = exc
                return outcome

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def run_threaded_calls(
    client: openai.OpenAI, count: int = CALLS, concurrency: int = CONCURRENCY
) -> list[ChaosOutcome]:
    tracer = _parents().get_tracer("chaos")

    def one(index: int) -> ChaosOutcome:
        if index < concurrency:
            time.sleep(index * RAMP_S)
        with tracer.start_as_current_span(f"call {index}") as parent:
            outcome = ChaosOutcome(index, parent.get_span_context().span_id)
            try:
                outcome.result = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": prompt(index)}],
                )
            except Exception as exc:
                outcome.error = exc
            return outcome

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="chaos") as pool:
        return list(pool.map(one, range(count)))


def _expected_outcome(kinds: list[str], attempts: int, policy: RetryPolicy) -> set[str]:
    last = kinds[-1]
    if last == "ok":
        return {"success"}
    if last == "400":
        return {"non_retryable"}
    if attempts == policy.max_attempts:
        return {"exhausted"}
    # Attempts left, yet no retry: only the retry budget may do that, and never for a 429.
    return set() if last == "429" else {"budget_exhausted"}


@dataclass
class _Context:
    """What the audit of one call needs besides the call itself."""

    policy: RetryPolicy
    probe: SchedulingProbe
    figures: ChaosFigures


def audit(
    mode: str,
    outcomes: Sequence[ChaosOutcome],
    requests: Sequence[RecordedRequest],
    spans: Sequence[ReadableSpan],
    ledger: SpanLedger,
    reader: InMemoryMetricReader,
    probe: SchedulingProbe,
    policy: RetryPolicy,
    wall_s: float,
) -> ChaosFigures:
    """Check every call against the server's journal and the telemetry; return the figures."""
    strays = [
        o for o in outcomes if o.error is not None and not isinstance(o.error, openai.APIError)
    ]
    assert not strays, f"non-openai exceptions reached the caller: {strays[:3]!r}"

    by_prompt: dict[str, list[RecordedRequest]] = defaultdict(list)
    for request in requests:
        assert request.method == "POST" and request.path == "/v1/chat/completions", request
        by_prompt[request.body["messages"][0]["content"]].append(request)

    all_calls = calls(spans)  # also checks the tree: attempts 1..n under their logical span
    by_parent = {}
    for call in all_calls:
        assert call.span.parent is not None, "the logical span is a child of the caller's span"
        by_parent[call.span.parent.span_id] = call
    assert len(by_parent) == len(outcomes), "one logical span per call"

    figures = ChaosFigures(
        mode=mode,
        calls=len(outcomes),
        requests=len(requests),
        attempt_spans=sum(len(c.attempts) for c in all_calls),
        logical_spans=len(all_calls),
        wall_s=wall_s,
        probe_largest_s=probe.largest,
    )
    context = _Context(policy, probe, figures)
    sleep_total = 0.0
    for outcome in outcomes:
        journal = sorted(by_prompt.pop(prompt(outcome.index), []), key=lambda r: r.retry_count or 0)
        sleep_total += _audit_call(outcome, journal, by_parent[outcome.parent_span_id], context)
    assert not by_prompt, f"requests no call made: {list(by_prompt)[:3]}"
    _audit_totals(figures, spans, ledger, reader, sleep_total)
    return figures


def _audit_call(
    outcome: ChaosOutcome, journal: list[RecordedRequest], call: Call, context: _Context
) -> float:
    """One call: what the caller got, its logical span, its attempts; returns its sleeps."""
    figures = context.figures
    kinds = [fault_kind(r.fault) for r in journal]
    seen = list(zip(kinds, (r.retry_count for r in journal), strict=True))
    where = (
        f"call {outcome.index}: server saw {seen}, attempt spans "
        f"{[attrs(a).get('error.type') for a in call.attempts]}, caller got {outcome.error!r}"
    )
    assert journal, where
    assert [r.retry_count for r in journal] == list(range(len(journal))), where
    assert len(call.attempts) == len(journal), where
    assert all(k in RETRYABLE_KINDS for k in kinds[:-1]), where
    figures.faults.update(kinds)

    # What the caller got: its own answer, or the SDK's exception for the last attempt.
    expected = KINDS[kinds[-1]][2]
    if expected is None:
        assert outcome.error is None, where
        assert outcome.result is not None
        assert outcome.result.choices[0].message.content == f"Echo: {prompt(outcome.index)}"
        figures.successes += 1
    else:
        assert type(outcome.error) is expected, where
        figures.errors[expected.__name__] += 1

    # The logical span.
    logical = attrs(call.span)
    assert logical["openai_retry.attempts"] == len(journal), where
    outcome_name = logical["openai_retry.outcome"]
    allowed = _expected_outcome(kinds, len(journal), context.policy)
    assert outcome_name in allowed, (outcome_name, where)
    figures.outcomes[str(outcome_name)] += 1
    if expected is None:
        assert call.span.status.status_code is StatusCode.UNSET, where
        assert "error.type" not in logical, where
    else:
        assert call.span.status.status_code is StatusCode.ERROR, where
        assert logical["error.type"] == f"openai.{expected.__name__}", where

    sleeps = sum(
        _audit_attempt(number, call, request, kind, context, where)
        for number, (request, kind) in enumerate(zip(journal, kinds, strict=True), start=1)
    )
    total = logical["openai_retry.total_sleep"]
    assert isinstance(total, float) and abs(total - sleeps) < 1e-9, where
    return sleeps


def _audit_attempt(
    number: int, call: Call, request: RecordedRequest, kind: str, context: _Context, where: str
) -> float:
    """One attempt span against the request it sent; returns the sleep that followed it."""
    span = call.attempts[number - 1]
    a = attrs(span)
    assert a["openai_retry.attempt"] == number, where
    assert a.get("error.type") == KINDS[kind][1], (number, a, where)
    if kind in ("drop", "timeout"):
        assert "http.response.status_code" not in a, where
    else:
        assert a["http.response.status_code"] == request.fault.status_code, where
    hint = None
    if kind == "429":
        hint = float(dict(request.fault.headers)["retry-after-ms"]) / 1000
        assert a["openai_retry.retry_after"] == hint, where
    if number == len(call.attempts):
        assert "openai_retry.sleep" not in a, where
        return 0.0
    sleep = a["openai_retry.sleep"]
    assert isinstance(sleep, float), where
    policy = context.policy
    if hint is not None:
        assert hint <= sleep <= hint * 1.1 + 1e-12, where
    else:
        assert 0 <= sleep <= min(policy.max_wait, policy.initial_wait * 2 ** (number - 1))

    # The gap to the next attempt: the sleep, plus the pacing wait the next attempt records.
    following = call.attempts[number]
    throttle = attrs(following).get("openai_retry.throttle", 0.0)
    assert isinstance(throttle, float)
    assert span.end_time is not None and following.start_time is not None
    failed_at, next_at = span.end_time / 1e9, following.start_time / 1e9
    error = (next_at - failed_at) - sleep - throttle
    assert error >= -CLOCK_SKEW_S, (
        f"the recorded sleep is longer than the gap ({error:.4f}s): {where}"
    )
    context.figures.sleep_errors.append(error)
    # Each wait (the sleep; the pacing wait, if any) may hide one stall shorter than the probe's
    # period: its resolution.
    resolution = PROBE_PERIOD_S * (2 if throttle > 0 else 1)
    stalls = context.probe.stalled_within(failed_at, next_at)
    context.figures.unexplained.append(error - stalls - resolution)
    return sleep


def _audit_totals(
    figures: ChaosFigures,
    spans: Sequence[ReadableSpan],
    ledger: SpanLedger,
    reader: InMemoryMetricReader,
    sleep_total: float,
) -> None:
    """Spans, the span ledger and the metrics, against the server's count."""
    assert figures.attempt_spans == figures.requests
    assert ledger.started == ledger.ended == len(spans), (ledger.started, ledger.ended, len(spans))
    # Attempts = calls + retries, with one retries measurement per call.
    retries_count, retries_sum = histogram_totals(reader, "openai_retry.client.call.retries")
    assert retries_count == figures.calls
    figures.metric_sum = figures.calls + int(retries_sum)
    assert figures.metric_sum == figures.requests
    served: Counter[str] = Counter()
    for kind, count in figures.faults.items():
        error = KINDS[kind][1]
        if error is not None:
            served[error] += count
    failed = counter_by_error(reader, "openai_retry.client.failed_attempts")
    assert failed == served, "failed attempts by error.type = the failures the server served"
    # Retry delay: per call that slept or waited, its sleeps and pacing waits.
    logical = [attrs(s) for s in spans if not s.name.startswith("attempt ")]
    waited = [
        a
        for a in logical
        if int(str(a["openai_retry.attempts"])) > 1 or "openai_retry.total_throttle" in a
    ]
    throttle_total = sum(float(str(a.get("openai_retry.total_throttle", 0.0))) for a in logical)
    delay_count, delay_sum = histogram_totals(reader, "openai_retry.client.call.retry_delay")
    assert delay_count == len(waited)
    assert len(figures.sleep_errors) == figures.requests - figures.calls
    assert abs(delay_sum - (sleep_total + throttle_total)) < 1e-6
    assert histogram_totals(reader, "gen_ai.client.operation.duration")[0] == figures.calls
