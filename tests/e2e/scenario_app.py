"""The application side of the wire tests, run in a fresh process: ``scenario_app.py NAME...``.

It does what a user does — ``import otel_openai_retry.auto`` with nothing but ``OTEL_*``
environment variables for configuration — then makes real OpenAI SDK calls against the fake
server, one logical call (one trace) per scenario name, flushes the telemetry and prints one JSON
line describing what the caller saw. The tests read the spans back from where they were exported.

Scenarios (the retry policy comes from the environment; the tests set 3 attempts):

- ``clean``: answered at once, one attempt;
- ``retried``: two 429s with ``retry-after-ms``, then success (3 attempts, outcome ``success``);
- ``exhausted``: 503 on every attempt (3 attempts, outcome ``exhausted``).

``contract-metrics`` records one value on each metric instrument the design names, with the
design's names and units and no OpenAI call, so the Prometheus naming of a real collector can be
checked before the library emits those metrics itself.
"""

from __future__ import annotations

import asyncio
import json
import sys

import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_openai_retry._internal import set_raise_internal_errors
from otel_openai_retry.testing import FakeOpenAIServer, Fault

MODEL = "gpt-4o-mini"
SCRIPTS: dict[str, list[Fault]] = {
    "clean": [],
    "retried": [Fault.rate_limit(retry_after_ms=50), Fault.rate_limit(retry_after_ms=50)],
    "exhausted": [Fault.server_error(503)] * 3,
}


async def call(client: openai.AsyncOpenAI, name: str) -> str:
    try:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"scenario {name}"}]
        )
    except openai.APIError as error:
        return f"openai.{type(error).__name__}"
    return "ok"


async def run_calls(names: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}
    with FakeOpenAIServer() as server:
        client = openai.AsyncOpenAI(api_key="sk-e2e-not-a-real-key", base_url=server.base_url)
        for name in names:
            server.reset()
            server.script(*SCRIPTS[name])
            caller_saw = await call(client, name)
            results[name] = {"caller_saw": caller_saw, "requests": server.request_count}
        await client.close()
    return results


def record_contract_metrics() -> None:
    """The design's instruments, names and units; values as one retried chat call makes them."""
    meter = metrics.get_meter("otel-openai-retry.e2e.contract")
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "server.address": "127.0.0.1",
    }
    meter.create_histogram("gen_ai.client.operation.duration", unit="s").record(0.42, common)
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(12, {**common, "gen_ai.token.type": "input"})
    tokens.record(7, {**common, "gen_ai.token.type": "output"})
    meter.create_histogram("gen_ai.client.operation.time_to_first_chunk", unit="s").record(
        0.08, common
    )
    attempts = meter.create_counter("retry.attempts", unit="{attempt}")
    attempts.add(1, {**common, "error.type": "openai.RateLimitError"})
    attempts.add(1, common)
    meter.create_histogram("retry.sleep.duration", unit="s").record(0.05, common)


def flush() -> None:
    tracer_provider = trace.get_tracer_provider()
    if isinstance(tracer_provider, TracerProvider):
        tracer_provider.shutdown()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.shutdown()


def main(argv: list[str]) -> int:
    set_raise_internal_errors(True)  # a telemetry bug fails the test instead of being logged
    import otel_openai_retry.auto  # noqa: F401  (the one line an application adds)

    names = [name for name in argv if name != "contract-metrics"]
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {sorted(SCRIPTS)}", file=sys.stderr)
        return 2
    results = asyncio.run(run_calls(names)) if names else {}
    if "contract-metrics" in argv:
        record_contract_metrics()
    results["tracer_provider"] = type(trace.get_tracer_provider()).__name__
    flush()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
