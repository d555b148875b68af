"""The application side of the wire tests, run in a fresh process: ``scenario_app.py NAME...``.

It does what a user does — ``import otel_openai_retry.auto`` with nothing but ``OTEL_*``
environment variables for configuration — then makes real OpenAI SDK calls against the fake
server, one logical call (one trace) per scenario name, flushes the telemetry and prints one JSON
line describing what the caller saw. The tests read the spans back from where they were exported.

Scenarios (the retry policy comes from the environment; the tests set 3 attempts):

- ``clean``: answered at once, one attempt;
- ``retried``: two 429s with ``retry-after-ms``, then success (3 attempts, outcome ``success``);
- ``exhausted``: 503 on every attempt (3 attempts, outcome ``exhausted``);
- ``rate-limited-then-500``: a 429 with ``retry-after-ms``, a 500, then success (the README's
  picture of a retried call, as the Jaeger UI shows it);
- ``stream``: a streamed chat call, rate limited once before its first chunk (its metrics include
  the time to first chunk);
- ``paced``: three calls (three traces): the first is rate limited with a 400 ms Retry-After,
  the two others start once it is (while it sleeps) and wait at the endpoint's pacing gate
  (``delayed``).

``contract-metrics`` records one value on each metric instrument the design names — both
generations of the GenAI names and ours — with the design's names and units and no OpenAI call,
so the Prometheus naming of a real collector can be checked against the dashboard whatever the
library happens to emit in one run.
"""

from __future__ import annotations

import asyncio
import json
import sys

import openai
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_openai_retry import RetryDetails, set_on_retry_hooks
from otel_openai_retry._internal import set_raise_internal_errors
from otel_openai_retry.testing import FakeOpenAIServer, Fault

MODEL = "gpt-4o-mini"
SCRIPTS: dict[str, list[Fault]] = {
    "clean": [],
    "retried": [Fault.rate_limit(retry_after_ms=50), Fault.rate_limit(retry_after_ms=50)],
    "exhausted": [Fault.server_error(503)] * 3,
    "rate-limited-then-500": [Fault.rate_limit(retry_after_ms=50), Fault.server_error(500)],
    "stream": [Fault.rate_limit(retry_after_ms=50)],
    "paced": [Fault.rate_limit(retry_after_ms=400)],
}


async def call(client: openai.AsyncOpenAI, name: str) -> str:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"scenario {name}"}]
    try:
        if name == "stream":
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass
        else:
            await client.chat.completions.create(model=MODEL, messages=messages)
    except openai.APIError as error:
        return f"openai.{type(error).__name__}"
    return "ok"


async def paced(client: openai.AsyncOpenAI) -> str:
    """Once the first call's 429 is in (its retry hook runs before its sleep), pacing holds the
    endpoint for the Retry-After: the two calls started then wait at the gate."""
    rate_limited = asyncio.Event()

    def hook(details: RetryDetails) -> None:
        rate_limited.set()

    set_on_retry_hooks([hook])
    try:
        first = asyncio.create_task(call(client, "paced"))
        await rate_limited.wait()
        others = await asyncio.gather(call(client, "paced"), call(client, "paced"))
        return ",".join([await first, *others])
    finally:
        set_on_retry_hooks(None)


async def run_calls(names: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}
    with FakeOpenAIServer() as server:
        client = openai.AsyncOpenAI(api_key="sk-e2e-not-a-real-key", base_url=server.base_url)
        for name in names:
            server.reset()
            server.script(*SCRIPTS[name])
            caller_saw = await (paced(client) if name == "paced" else call(client, name))
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
    # GenAI, older names (OTEL_SEMCONV_STABILITY_OPT_IN unset, or .../dup).
    meter.create_histogram("gen_ai.client.operation.duration", unit="s").record(0.42, common)
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(12, {**common, "gen_ai.token.type": "input"})
    tokens.record(7, {**common, "gen_ai.token.type": "output"})
    meter.create_histogram("gen_ai.client.operation.time_to_first_chunk", unit="s").record(
        0.08, common
    )
    # GenAI, current names (gen_ai_latest_experimental, or .../dup).
    meter.create_histogram("gen_ai.client.inference.duration", unit="s").record(0.42, common)
    meter.create_histogram("gen_ai.client.inference.time_to_first_chunk", unit="s").record(
        0.08, common
    )
    text = {**common, "gen_ai.token.modality": "text"}
    for name, value in [
        ("input_tokens", 12),
        ("output_tokens", 7),
        ("cache_read.input_tokens", 4),
        ("cache_write.input_tokens", 2),
        ("reasoning.output_tokens", 3),
    ]:
        meter.create_counter(f"gen_ai.client.inference.usage.{name}", unit="{token}").add(
            value, text
        )
    # Ours, in every mode.
    meter.create_histogram("openai_retry.client.call.retries", unit="{retry}").record(1, common)
    meter.create_histogram("openai_retry.client.call.retry_delay", unit="s").record(0.05, common)
    meter.create_counter("openai_retry.client.failed_attempts", unit="{attempt}").add(
        1,
        {**common, "error.type": "openai.RateLimitError", "http.response.status_code": 429},
    )
    meter.create_histogram("openai_retry.client.rate_limiting.time_in_queue", unit="s").record(
        0.02, common
    )
    paced = meter.create_counter("openai_retry.client.rate_limiting.requests", unit="{request}")
    paced.add(1, {**common, "openai_retry.rate_limiting.result": "delayed"})
    paced.add(1, {**common, "openai_retry.rate_limiting.result": "acquired"})


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
