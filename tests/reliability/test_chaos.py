"""Chaos: 2,000 calls at concurrency 200 against seeded random faults, audited exactly.

Async (one event loop) and sync (200 threads). The fake server runs in a process of its own
(``FakeServerProcess``) so its work does not take the client's GIL; ``chaos.py`` has the fault mix,
the audit, and how the sleep error is measured. The figures appear in the terminal summary.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry.testing import FakeServerProcess

from ..helpers import Instrument, async_client, sync_client
from ..helpers import sdk_httpx as httpx2
from .chaos import (
    CALLS,
    CHAOS_POLICY,
    CLIENT_TIMEOUT_S,
    CONCURRENCY,
    SEED,
    ChaosFigures,
    SchedulingProbe,
    SpanLedger,
    audit,
    chaos_faults,
    run_async_calls,
    run_threaded_calls,
)
from .conftest import report_figures

WARM_UP: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "warm up"}
]
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=CONCURRENCY)
"""Keep every connection of the 200 concurrent calls alive (the SDK's default keeps 100)."""


@pytest.fixture
def remote() -> Iterator[FakeServerProcess]:
    with FakeServerProcess() as server:
        yield server


@pytest.fixture
def ledger(tracer_provider: TracerProvider) -> SpanLedger:
    ledger = SpanLedger()
    tracer_provider.add_span_processor(ledger)
    return ledger


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """A full collection over thousands of finished spans pauses every call at once: noise in
    the sleep measurement, not something under test."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def check_common(figures: ChaosFigures) -> None:
    report_figures(figures.line())
    print(figures.line())
    assert figures.calls == CALLS
    assert figures.outcomes["exhausted"] > 0, "some calls must exhaust their attempts"
    assert figures.outcomes["success"] > 0


async def test_chaos_run_async(
    remote: FakeServerProcess,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    ledger: SpanLedger,
    instrument: Instrument,
) -> None:
    # The SDK's first call in a process builds its models (tens of ms): not part of the run.
    async with async_client(remote.base_url) as warm:
        await warm.chat.completions.create(model="gpt-4o-mini", messages=WARM_UP)
    remote.reset()
    instrument(policy=CHAOS_POLICY)
    remote.script(*chaos_faults(SEED, CALLS * CHAOS_POLICY.max_attempts))
    client = async_client(
        remote.base_url,
        timeout=CLIENT_TIMEOUT_S,
        http_client=openai.DefaultAsyncHttpxClient(limits=LIMITS),
    )
    probe = SchedulingProbe()
    with no_cyclic_gc():
        probe.start_task()
        started = time.monotonic()
        outcomes = await run_async_calls(client)
        wall = time.monotonic() - started
        await probe.stop_task()
    await client.close()
    figures = audit(
        "async",
        outcomes,
        remote.requests,
        exporter.get_finished_spans(),
        ledger,
        metric_reader,
        probe,
        CHAOS_POLICY,
        wall,
    )
    check_common(figures)
    assert figures.largest_unexplained_s <= 0, figures.line()


def test_chaos_run_threads(
    remote: FakeServerProcess,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    ledger: SpanLedger,
    instrument: Instrument,
) -> None:
    with sync_client(remote.base_url) as warm:
        warm.chat.completions.create(model="gpt-4o-mini", messages=WARM_UP)
    remote.reset()
    instrument(policy=CHAOS_POLICY)
    remote.script(*chaos_faults(SEED + 1, CALLS * CHAOS_POLICY.max_attempts))
    client = sync_client(
        remote.base_url,
        timeout=CLIENT_TIMEOUT_S,
        http_client=openai.DefaultHttpxClient(limits=LIMITS),
    )
    probe = SchedulingProbe()
    with no_cyclic_gc():
        probe.start_thread()
        started = time.monotonic()
        outcomes = run_threaded_calls(client)
        wall = time.monotonic() - started
        probe.stop_thread()
    client.close()
    figures = audit(
        "threads",
        outcomes,
        remote.requests,
        exporter.get_finished_spans(),
        ledger,
        metric_reader,
        probe,
        CHAOS_POLICY,
        wall,
    )
    check_common(figures)
    # A thread meets the GIL twice between a failure and its next attempt: to finish the failed
    # attempt's bookkeeping, and to wake from the sleep. Either wait can be as long as the worst
    # the probe, a thread in the same contest, suffered in this run.
    assert figures.largest_sleep_error_s <= 2 * figures.probe_largest_s, figures.line()


ADAPTIVE_CALLS = 600
ADAPTIVE_CONCURRENCY = 100


async def test_chaos_run_with_adaptive_pacing(
    remote: FakeServerProcess,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    ledger: SpanLedger,
    instrument: Instrument,
) -> None:
    """The same audit with the default policy's pacing on: every 429 (with OpenAI's rate-limit
    headers, so the pacer sends at the announced rate rather than backing off toward a crawl)
    closes the gate for everyone for its hint, and the wait shows as ``openai_retry.throttle``."""
    async with async_client(remote.base_url) as warm:
        await warm.chat.completions.create(model="gpt-4o-mini", messages=WARM_UP)
    remote.reset()
    policy = dataclasses.replace(CHAOS_POLICY, adaptive=True)
    instrument(policy=policy)
    faults = chaos_faults(SEED + 2, ADAPTIVE_CALLS * 3, rate_limit_headers=True)
    remote.script(*faults)
    client = async_client(
        remote.base_url,
        timeout=CLIENT_TIMEOUT_S,
        http_client=openai.DefaultAsyncHttpxClient(limits=LIMITS),
    )
    probe = SchedulingProbe()
    with no_cyclic_gc():
        probe.start_task()
        started = time.monotonic()
        outcomes = await run_async_calls(client, ADAPTIVE_CALLS, ADAPTIVE_CONCURRENCY)
        wall = time.monotonic() - started
        await probe.stop_task()
    await client.close()
    spans = exporter.get_finished_spans()
    figures = audit(
        "async, adaptive pacing",
        outcomes,
        remote.requests,
        spans,
        ledger,
        metric_reader,
        probe,
        policy,
        wall,
    )
    report_figures(figures.line())
    assert figures.calls == ADAPTIVE_CALLS
    throttled = [s for s in spans if (s.attributes or {}).get("openai_retry.throttle")]
    assert throttled, "the pacer held some attempts back"
    assert figures.largest_unexplained_s <= 0, figures.line()
