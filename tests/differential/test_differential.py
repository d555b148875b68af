"""Do no harm: every generated fault script, run through the bare SDK and through ours.

The same script is played to the bare SDK (not instrumented) and then to ours (instrumented,
in-memory telemetry), against the real fake server over loopback HTTP. Whatever the script, a
caller must never be worse off with the library on: the relations in ``relations.py`` are
checked for each one, and hypothesis shrinks a broken one to its smallest script.

Waits: the bare SDK's sleeps are skipped (a clock mock: its backoff would take seconds per
retry); ours really sleeps, with a policy of millisecond backoff and with valid server hints of
at most 20 ms, so that the event loop's own sleep (asyncio or trio) is exercised. Hostile hints
(NaN, negative, huge, 400 digits, garbage, far dates) are refused or ignored by both.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault, RecordedRequest

from . import relations as rel
from .calls import (
    KINDS,
    PROMPT,
    TIMEOUT_FAULT,
    Flavor,
    Kind,
    Outcome,
    Scenario,
    run,
    sdk_sleeps_skipped,
    status_error_class,
)

POLICY = RetryPolicy(max_attempts=4, initial_wait=0.001, max_wait=0.004)
"""One attempt more than the SDK's default three, so that "ours allows at least as many
attempts" holds for a client without ``max_retries``; millisecond backoff. Budget and pacing stay
as a user gets them (a fresh instrumentation per script starts them afresh)."""

DIFFERENTIAL = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""Reproducible in CI: the same examples every run, no example database. The fixtures are reset
by hand for each example."""

# -- scripts ------------------------------------------------------------------------------------

STATUSES = (400, 401, 404, 408, 409, 422, 429, 500, 503)
HUGE = "9" * 400
HOSTILE_NUMBERS = ("nan", "NaN", "-1", "-5000", "1e300", HUGE, "inf", "-inf", "abc", "", "0x10")
"""Not a number, negative, beyond any float or any sane wait, 400 digits, garbage, empty."""
HTTP_DATES = ("Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 99 Foo 2026 99:99:99 GMT")
MS_HINTS = ("0", "1", "5", "20", "12.5", "86400000", *HOSTILE_NUMBERS)
"""``retry-after-ms``: valid ones of at most 20 ms (ours really sleeps them), a day, hostile."""
SECONDS_HINTS = ("0", "0.01", "0.02", "86400", *HOSTILE_NUMBERS, *HTTP_DATES)
"""``retry-after``: seconds (valid, a day, hostile), a past HTTP date, a garbled one."""
DATE_HINTS_IN = (-3600.0, 86400.0)
"""``retry-after`` as an HTTP date this far from when it is sent: past, or a day ahead."""
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
)
RATE_LIMIT_VALUES = ("100", "0", "1e400", *HOSTILE_NUMBERS)
RESETS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
RESET_VALUES = ("1ms", "1s", "0s", "-1s", "abc", "", "nan", "1e400ms")
"""Resets stay short or unreadable: a long valid one would have the pacer (rightly) wait it."""
LIMIT_TYPES = ("tokens", "requests", "insufficient_quota")
"""What a 429's body may say was hit: a token limit, a request limit, or no credit left."""
ECHO = f"Invalid 'messages[0].content': {PROMPT!r} is not allowed."
"""An error message quoting the prompt, as the real API's validation errors do."""


@st.composite
def rate_limit_headers(draw: st.DrawFn) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers, which the pacer reads: some, valid or hostile."""
    headers: dict[str, str] = {}
    for name in draw(st.lists(st.sampled_from(RATE_LIMIT_HEADERS), max_size=2, unique=True)):
        headers[name] = draw(st.sampled_from(RATE_LIMIT_VALUES))
    for name in draw(st.lists(st.sampled_from(RESETS), max_size=1)):
        headers[name] = draw(st.sampled_from(RESET_VALUES))
    return headers


@st.composite
def status_faults(draw: st.DrawFn) -> Fault:
    """An error answer with any mix of retry hints (valid and hostile), ``x-should-retry`` and
    rate-limit headers, its message quoting the prompt or not; a 429 saying what was hit."""
    headers = draw(rate_limit_headers())
    ms = draw(st.none() | st.sampled_from(MS_HINTS))
    if ms is not None:
        headers["retry-after-ms"] = ms
    seconds = draw(st.none() | st.sampled_from(SECONDS_HINTS) | st.sampled_from(DATE_HINTS_IN))
    if isinstance(seconds, str):
        headers["retry-after"] = seconds
    status = draw(st.sampled_from(STATUSES))
    fault = Fault.status(
        status,
        headers=headers,
        should_retry=draw(st.none() | st.booleans()),
        message=draw(st.none() | st.just(ECHO)),
        error_type=draw(st.none() | st.sampled_from(LIMIT_TYPES)) if status == 429 else None,
    )
    if isinstance(seconds, float):
        fault = dataclasses.replace(fault, retry_after_date_in=seconds)
    return fault


CUTS = tuple(map(Fault.stream_break, (0, 1, 3)))
TRANSPORT_FAULTS = st.sampled_from((*[Fault.drop(), *CUTS] * 3, TIMEOUT_FAULT))
"""Drops, cut bodies (a stream after that many events; a plain answer halfway), and, rarer as
each costs the client's whole timeout in every run, an answer slower than that timeout."""

SUCCESSES = rate_limit_headers().map(lambda headers: Fault.status(200, headers=headers))
"""A normal answer, perhaps with rate-limit headers (valid or hostile) for the pacer to read."""

SCRIPTS = st.lists(status_faults() | TRANSPORT_FAULTS | SUCCESSES, max_size=4).filter(
    lambda faults: faults.count(TIMEOUT_FAULT) <= 1
)
"""At most one timeout per script: each costs the client's whole timeout, in every run."""

MAX_RETRIES = st.sampled_from((None, 0, 1, 2, 3))


def scenarios(flavor: Flavor) -> st.SearchStrategy[Scenario]:
    return st.builds(
        Scenario,
        flavor=st.just(flavor),
        kind=st.sampled_from(KINDS),
        max_retries=MAX_RETRIES,
        faults=SCRIPTS.map(tuple),
    )


# -- running one script both ways ---------------------------------------------------------------


@dataclass
class Rig:
    """The fake server and the in-memory telemetry, reset for each example."""

    server: FakeOpenAIServer
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    ledger: rel.SpanLedger
    logs: rel.LogRecords

    def fresh(self, faults: tuple[Fault, ...]) -> None:
        self.server.reset()
        self.server.script(*faults)
        self.exporter.clear()
        self.ledger.clear()
        self.logs.records.clear()


@pytest.fixture
def rig(
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> Iterator[Rig]:
    ledger = rel.SpanLedger()
    tracer_provider.add_span_processor(ledger)
    logs = rel.LogRecords()
    loggers = [logging.getLogger(name) for name in ("otel_openai_retry", "opentelemetry")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(logs)
        logger.setLevel(logging.DEBUG)
    try:
        yield Rig(server, tracer_provider, meter_provider, exporter, metric_reader, ledger, logs)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(logs)
            logger.setLevel(level)


def run_ours(rig: Rig, scenario: Scenario, policy: RetryPolicy = POLICY) -> Outcome:
    rig.fresh(scenario.faults)
    instrumentor = OpenAIRetryInstrumentor()
    instrumentor.instrument(
        tracer_provider=rig.tracer_provider, meter_provider=rig.meter_provider, policy=policy
    )
    try:
        return run(scenario, rig.server.base_url)
    finally:
        instrumentor.uninstrument()


def sdk_class_for(
    rig: Rig, scenario: Scenario, received: list[RecordedRequest]
) -> type[BaseException] | None:
    """What the SDK raises when the last answer ours got is its only one: asked of the SDK.

    A status is mapped by the SDK's own ``_make_status_error``; anything else (a drop, a
    timeout, a cut body, a request the transport refused) by running the bare SDK once, with no
    retries, against that one answer.
    """
    last = received[-1].fault if received else None
    if last is not None and last.is_error and last.break_after is None:
        return status_error_class(last.status_code)
    rig.fresh(() if last is None else (last,))
    with sdk_sleeps_skipped():
        oracle = run(scenario, rig.server.base_url, no_retries=True)
    return None if oracle.error is None else type(oracle.error)


def play(rig: Rig, scenario: Scenario, policy: RetryPolicy = POLICY) -> rel.OursRun:
    """The script through the bare SDK, then through ours: what the relations look at."""
    rig.fresh(scenario.faults)
    with sdk_sleeps_skipped():
        bare = run(scenario, rig.server.base_url)
    ours = run_ours(rig, scenario, policy)
    received = rig.server.requests
    known: list[type[BaseException] | None] = []

    def sdk_class() -> type[BaseException] | None:
        if not known:
            known.append(sdk_class_for(rig, scenario, received))
        return known[0]

    return rel.OursRun(
        scenario=scenario,
        bare=bare,
        ours=ours,
        received=received,
        spans=rig.exporter.get_finished_spans(),
        unended=rig.ledger.unended(),
        logs=rig.logs.texts(),
        allowed=policy.max_attempts if scenario.max_retries is None else scenario.max_retries + 1,
        metrics=rel.metrics_text(rig.reader),
        sdk_class=sdk_class,
    )


def differential(rig: Rig, scenario: Scenario, policy: RetryPolicy = POLICY) -> None:
    result = play(rig, scenario, policy)
    for relation in rel.RELATIONS:
        relation(result)


# -- the suite ----------------------------------------------------------------------------------


def known(flavor: Flavor, kind: Kind, *faults: Fault, max_retries: int | None = None) -> Scenario:
    """A script that is always played (``test_known_scripts``), each its own test: the cases
    where differences between the bare SDK and ours were found, checked by every run
    whatever the generated scripts happen to be."""
    return Scenario(flavor, kind, max_retries, faults)


HINT_INF = Fault.status(429, headers={"retry-after": "inf"})
"""The SDK reads a literal infinity as no hint (and backs off); a number too large for a float
as a wait too long to retry."""
HINT_NAN_MS = Fault.status(500, headers={"retry-after-ms": "nan", "retry-after": "86400"})
"""The SDK takes the first header that parses as a float, NaN included, and so backs off."""
HUGE_LIMITS = {
    "x-ratelimit-limit-requests": HUGE,
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
}
"""A 400-digit limit beside a valid reset: the rate the pacer would learn is beyond any float."""

TOKEN_LIMITS = {
    "x-ratelimit-limit-tokens": "1000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "20ms",
    "retry-after-ms": "1",
}
"""A token bucket empty for 20 ms: the pacer learns a token limit and paces the retry by it."""


KNOWN = (
    known("sync", "upload_read_once", Fault.server_error()),
    known("asyncio", "upload_read_once", Fault.drop()),
    known("trio", "upload_read_once", Fault.drop()),
    known("sync", "chat_raw", Fault.drop()),
    known("trio", "chat_raw", Fault.server_error()),
    known("asyncio", "chat_streaming_response", Fault.server_error()),
    known("sync", "chat_streaming_response", Fault.stream_break(1)),
    known("sync", "chat_stream", Fault.stream_break(0)),
    known("asyncio", "chat_stream", Fault.stream_break(0)),
    known("sync", "chat_stream", Fault.stream_break(1)),
    known("sync", "chat", Fault.status(400, message=ECHO)),
    known("sync", "chat", HINT_INF),
    known("sync", "chat", HINT_NAN_MS),
    known(
        "sync", "chat", Fault.rate_limit(retry_after_ms=1), Fault.status(200, headers=HUGE_LIMITS)
    ),
    known(
        "asyncio",
        "chat",
        Fault.rate_limit(retry_after_ms=1),
        Fault.status(429, headers={**HUGE_LIMITS, "retry-after-ms": "1"}),
    ),
    known("sync", "chat", *[Fault.server_error()] * 3, max_retries=2),
    known("asyncio", "chat", TIMEOUT_FAULT),
    known("trio", "chat", Fault.server_error()),
    known("trio", "chat", Fault.rate_limit(retry_after_ms=5)),
    known("sync", "chat", Fault.insufficient_quota()),
    known("asyncio", "chat_stream", Fault.insufficient_quota(), max_retries=3),
    known("sync", "chat", Fault.status(429, headers=TOKEN_LIMITS, error_type="tokens")),
    known(
        "asyncio",
        "chat_raw",
        Fault.status(429, headers=TOKEN_LIMITS, error_type="tokens"),
        Fault.status(200, headers=TOKEN_LIMITS),
    ),
    # A token limit no header states: the rate is found from the answers (none yet here).
    known("sync", "chat", *[Fault.status(429, error_type="tokens")] * 2),
    known(
        "trio",
        "chat_stream",
        Fault.status(429, headers={"retry-after-ms": "1"}, error_type="tokens"),
    ),
    # Answers that do not say what they cost: counted at their estimate when they come.
    known("asyncio", "chat_streaming_response", Fault.status(429, error_type="tokens")),
    known("sync", "chat_stream", *[Fault.status(429, error_type="tokens")] * 2),
    Scenario("sync", "chat", None, bad_header="api_key"),
    Scenario("asyncio", "chat_stream", None, bad_header="custom"),
    Scenario("trio", "upload_bytes", 1, bad_header="api_key"),
)


@pytest.mark.parametrize("scenario", KNOWN, ids=repr)
def test_known_scripts(rig: Rig, scenario: Scenario) -> None:
    differential(rig, scenario)


@settings(DIFFERENTIAL, max_examples=150)
@given(scenario=scenarios("sync"))
def test_sync_scripts(rig: Rig, scenario: Scenario) -> None:
    differential(rig, scenario)


@settings(DIFFERENTIAL, max_examples=90)
@given(scenario=scenarios("asyncio"))
def test_asyncio_scripts(rig: Rig, scenario: Scenario) -> None:
    differential(rig, scenario)


@settings(DIFFERENTIAL, max_examples=90)
@given(scenario=scenarios("trio"))
def test_trio_scripts(rig: Rig, scenario: Scenario) -> None:
    differential(rig, scenario)


@settings(DIFFERENTIAL, max_examples=20)
@given(
    scenario=st.builds(
        Scenario,
        flavor=st.sampled_from(("sync", "asyncio", "trio")),
        kind=st.sampled_from(KINDS),
        max_retries=MAX_RETRIES,
        faults=st.just(()),
        bad_header=st.sampled_from(("api_key", "custom")),
    )
)
def test_header_values_the_transport_refuses(rig: Rig, scenario: Scenario) -> None:
    """A key with a trailing newline, or such a custom header: nothing is sent, the caller gets
    the SDK's error, and the refused value (a secret) is nowhere in telemetry."""
    differential(rig, scenario)
