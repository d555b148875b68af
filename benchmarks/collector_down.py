"""Call latency with the OpenTelemetry Collector up, down (refused) and hung (never answers).

Run it from the repository root::

    .venv/bin/python benchmarks/collector_down.py
    .venv/bin/python benchmarks/collector_down.py --calls 1000 --concurrency 20 --rounds 5

Each measurement runs in a fresh child process: ``OpenAIRetryInstrumentor`` with an SDK
``TracerProvider`` (``BatchSpanProcessor``, OTLP/HTTP exporter, 200 ms schedule) and
``MeterProvider`` (periodic reader every second, OTLP/HTTP exporter), both with the same export
timeout, pointed at one of:

- ``up``: a stand-in collector on loopback that answers every export ``200`` at once;
- ``down``: a loopback port nothing listens on (every export is refused at once);
- ``hung``: a loopback port that accepts connections and never answers (every export waits out
  its timeout, holding the exporter's thread).

The child warms up, then makes ``--calls`` successful chat completions at ``--concurrency``
against the fake OpenAI server (a process of its own) and reports each call's latency, its CPU
time, and how long shutting the providers down took. Scenarios are interleaved and rotated each
round; the table shows medians over rounds. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCENARIOS = ("up", "down", "hung")


# -- the child: one measurement -------------------------------------------------------------------


async def _measure(base_url: str, calls: int, concurrency: int) -> list[float]:
    import openai

    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url) as client:

        async def one(i: int) -> None:
            async with gate:
                started = time.perf_counter()
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}]
                )
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one(i) for i in range(20)))  # warm-up, not measured
        latencies.clear()
        await asyncio.gather(*(one(i) for i in range(calls)))
    return latencies


def child(args: argparse.Namespace) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_openai_retry import OpenAIRetryInstrumentor

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{args.endpoint}/v1/traces", timeout=args.timeout),
            schedule_delay_millis=200,
        )
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{args.endpoint}/v1/metrics", timeout=args.timeout),
        export_interval_millis=1000,
        export_timeout_millis=args.timeout * 1000,
    )
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    OpenAIRetryInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    cpu = time.process_time()
    started = time.perf_counter()
    latencies = asyncio.run(_measure(args.base_url, args.calls, args.concurrency))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    shutdown_started = time.perf_counter()
    tracer_provider.shutdown()
    traces_shutdown = time.perf_counter() - shutdown_started
    shutdown_started = time.perf_counter()
    meter_provider.shutdown()
    metrics_shutdown = time.perf_counter() - shutdown_started
    print(
        json.dumps(
            {
                "latencies": latencies,
                "wall": wall,
                "cpu": cpu,
                "traces_shutdown": traces_shutdown,
                "metrics_shutdown": metrics_shutdown,
            }
        )
    )


# -- the parent: collectors, fake server, children, table -----------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def _blackhole() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)
        for conn in held:
            conn.close()


class _Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _collector() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _endpoint(scenario: str) -> Iterator[str]:
    if scenario == "down":
        yield f"http://127.0.0.1:{_closed_port()}"
        return
    with _collector() if scenario == "up" else _blackhole() as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def _fake_openai() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_openai_retry.testing", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the fake server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def _run_child(scenario: str, base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    with _endpoint(scenario) as endpoint:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--endpoint",
                endpoint,
                "--base-url",
                base_url,
                "--calls",
                str(args.calls),
                "--concurrency",
                str(args.concurrency),
                "--timeout",
                str(args.timeout),
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} child failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parent(args: argparse.Namespace) -> None:
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
    with _fake_openai() as base_url:
        for round_ in range(args.rounds):
            order = SCENARIOS[round_ % 3 :] + SCENARIOS[: round_ % 3]
            for scenario in order:
                result = _run_child(scenario, base_url, args)
                latencies = result["latencies"]
                rows[scenario].append(
                    {
                        "p50": _quantile(latencies, 0.50) * 1000,
                        "p90": _quantile(latencies, 0.90) * 1000,
                        "p99": _quantile(latencies, 0.99) * 1000,
                        "max": max(latencies) * 1000,
                        "mean": statistics.fmean(latencies) * 1000,
                        "cpu_per_call": result["cpu"] / len(latencies) * 1000,
                        "traces_shutdown": result["traces_shutdown"],
                        "metrics_shutdown": result["metrics_shutdown"],
                    }
                )
                print(f"  round {round_ + 1} {scenario}: done", file=sys.stderr, flush=True)

    print(
        f"\ncall latency, collector up vs down vs hung: {args.calls} calls at concurrency "
        f"{args.concurrency}, export timeout {args.timeout:g} s, medians of {args.rounds} rounds"
    )
    header = ("collector", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "CPU ms/call")
    shutdowns = ("traces_shutdown", "metrics_shutdown")
    print(
        f"{header[0]:<10}"
        + "".join(f"{h:>12}" for h in header[1:])
        + "".join(f"{h:>16}" for h in ("traces shut s", "metrics shut s"))
    )
    for scenario in SCENARIOS:
        cells = [
            statistics.median(r[key] for r in rows[scenario])
            for key in ("p50", "p90", "p99", "max", "mean", "cpu_per_call")
        ]
        shut = [statistics.median(r[key] for r in rows[scenario]) for key in shutdowns]
        print(
            f"{scenario:<10}"
            + "".join(f"{c:>12.2f}" for c in cells)
            + "".join(f"{c:>16.2f}" for c in shut)
        )
    print(
        "\nShutdown is the SDK's: the batch span processor sends every queued batch (512 spans "
        "each), each export waiting up to the timeout; the periodic metric reader, one export in "
        "flight and a final one."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="exporter timeout, seconds (default 2)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
