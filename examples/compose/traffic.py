"""Steady, mixed OpenAI traffic for the compose stack, so the Grafana dashboard has something to
show: clean calls, rate limits honoured, server errors retried, calls that run out of attempts,
bad requests that are not retried, and streams.

Nothing here is specific to the stack: like any application, it adds the one import and is
configured by the standard environment variables (defaults below point at the compose collector)::

    docker compose -f examples/compose/compose.yaml up -d
    .venv/bin/python examples/compose/traffic.py --duration 120

Each worker owns an embedded fake OpenAI server (no API key, no network), so the faults scripted
for one call are the ones that call meets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_openai_retry.testing import FakeOpenAIServer, Fault

DEFAULTS = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
    "OTEL_SERVICE_NAME": "otel-openai-retry-traffic",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    "OTEL_OPENAI_RETRY_MAX_ATTEMPTS": "3",
    "OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.2",
    "OTEL_OPENAI_RETRY_MAX_WAIT": "2",
}


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    model: str = "gpt-4o-mini"
    stream: bool = False


KINDS = [
    Kind("clean", 50),
    Kind("clean-stream", 10, stream=True),
    Kind("rate-limited", 15, model="gpt-4o"),
    Kind("server-error", 10),
    Kind("exhausted", 5, model="gpt-4o"),
    Kind("bad-request", 5),
    Kind("embeddings", 5, model="text-embedding-3-small"),
]


def faults_for(kind: Kind) -> list[Fault]:
    if kind.name == "rate-limited":
        return [Fault.rate_limit(retry_after_ms=random.choice([100, 300, 800]))]
    if kind.name == "server-error":
        return [Fault.server_error(random.choice([500, 502, 503]))]
    if kind.name == "exhausted":
        return [Fault.server_error(503)] * 3
    if kind.name == "bad-request":
        return [Fault.status(400)]
    return [Fault.delay(random.uniform(0.02, 0.3))]


async def one_call(client: openai.AsyncOpenAI, kind: Kind) -> str:
    try:
        if kind.name == "embeddings":
            await client.embeddings.create(model=kind.model, input="hello")
        elif kind.stream:
            stream = await client.chat.completions.create(
                model=kind.model,
                messages=[{"role": "user", "content": "stream, please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass
        else:
            await client.chat.completions.create(
                model=kind.model, messages=[{"role": "user", "content": kind.name}]
            )
    except openai.APIError as error:
        return type(error).__name__
    return "ok"


async def worker(deadline: float, rate: float, tally: Counter[str]) -> None:
    with FakeOpenAIServer() as server:
        client = openai.AsyncOpenAI(api_key="sk-traffic-not-a-real-key", base_url=server.base_url)
        while time.monotonic() < deadline:
            kind = random.choices(KINDS, weights=[k.weight for k in KINDS])[0]
            server.reset()
            server.script(*faults_for(kind))
            tally[f"{kind.name}: {await one_call(client, kind)}"] += 1
            await asyncio.sleep(random.expovariate(rate))
        await client.close()


async def run(duration: float, workers: int, rate: float) -> Counter[str]:
    tally: Counter[str] = Counter()
    deadline = time.monotonic() + duration
    await asyncio.gather(*(worker(deadline, rate, tally) for _ in range(workers)))
    return tally


def flush() -> None:
    tracer_provider = trace.get_tracer_provider()
    if isinstance(tracer_provider, TracerProvider):
        tracer_provider.shutdown()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent callers (default 4)")
    parser.add_argument("--rate", type=float, default=2.0, help="calls/s per worker (default 2)")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)

    # The one line an application adds; after the defaults above, since it reads them.
    import otel_openai_retry.auto  # noqa: F401

    print(
        f"sending {args.workers} x ~{args.rate}/s calls for {args.duration:.0f} s to "
        f"{os.environ['OTEL_EXPORTER_OTLP_ENDPOINT']} as {os.environ['OTEL_SERVICE_NAME']!r}"
    )
    tally = asyncio.run(run(args.duration, args.workers, args.rate))
    flush()
    for outcome, count in sorted(tally.items()):
        print(f"{count:6d}  {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
