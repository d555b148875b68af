"""Where the instrumentation's per-call CPU goes: the "ours" variant under a sampling profiler.

Run it from the repository root, with the ``bench`` extra installed::

    .venv/bin/python benchmarks/profile_overhead.py

The fake server runs in its own process. This process first measures, with the profiler off,
the CPU per call of the bare client and of the instrumented one taking turns (instrument,
a block of calls, uninstrument), and how much of it is spent below ``AsyncAPIClient.post`` and in
the SDK's own ``request``: the difference below ``post`` is the instrumentation's cost, measured
without sampling error. Then it profiles a batch of instrumented calls.

Two samplers: ``py-spy`` (the default) samples the stacks of every thread from outside at a fixed
rate, so a function's share does not depend on how often it is called; ``pyinstrument`` hooks
every Python call, which inflates small, frequently called functions, but gives an interactive
HTML view (``--html profile.html``).

Each sample is given to the innermost frame on its stack that belongs to ``otel_openai_retry``,
``tenacity`` or ``opentelemetry`` (the instrumentation's frames), unless the SDK's own work comes
first: inside the original ``request``, ``_process_response`` or ``__stream__`` of the SDK, it is
the bare client's. So a pydantic ``model_copy`` called by our wrapper counts as ours, an httpx
read inside the SDK's ``request`` does not, and the span processor's export thread counts as ours.
Idle stacks are left out. Samples measure wall time, which a thread also spends preempted (in a
loopback ``send`` that wakes the server, say), so their share of the whole call is not a share of
CPU; the tables therefore give each function its share of the instrumentation's samples, and that
share of the measured overhead in µs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _bench_common import (
    Variant,
    chat_call,
    fake_server,
    library_versions,
    machine_description,
    make_client,
    run_calls,
    setup_variant,
)

INSTRUMENTATION_PACKAGES = ("otel_openai_retry", "tenacity", "opentelemetry")
"""Frames whose time is the instrumentation's (ours, the loop we build on, the telemetry SDK)."""

SDK_ENTRY_POINTS = {
    ("openai/_base_client.py", "request"),
    ("openai/_base_client.py", "_process_response"),
    ("openai/_streaming.py", "__stream__"),
}
"""The SDK's own work: what runs beneath these is what the bare client does too."""

IDLE = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("concurrent/futures/thread.py", "_worker"),
}
"""Waiting, not working: the event loop's poll, the telemetry SDK's threads between exports, the
default executor's idle threads (py-spy counts a thread blocked in C as busy)."""

Samples = list[tuple[list["Site"], float]]
"""(stack from the root, seconds or sample count) pairs."""


@dataclass(frozen=True)
class Site:
    function: str
    file_path: str
    line_no: int

    @property
    def package(self) -> str:
        return package_of(self.file_path)

    def name(self) -> str:
        """The qualified name, ``<locals>`` dropped: ``_async_request_wrapper.request.send``."""
        return self.function.replace(".<locals>", "")

    def short(self) -> str:
        path = self.file_path
        for marker in ("site-packages/", "/src/", "/lib/python"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        path = path.replace("/_internal/", "/…/").replace("opentelemetry/sdk/", "otel-sdk/")
        return f"{path}:{self.line_no}"

    @property
    def is_instrumentation(self) -> bool:
        return self.package in INSTRUMENTATION_PACKAGES

    @property
    def is_sdk_entry(self) -> bool:
        # This script's own timers around post() and request() count as the SDK's.
        return _matches(self, SDK_ENTRY_POINTS) or (
            "LayerTimer" in self.function and self.function.endswith("timed")
        )

    @property
    def is_idle(self) -> bool:
        return _matches(self, IDLE)


def _matches(site: Site, places: set[tuple[str, str]]) -> bool:
    name = site.function.rsplit(".", 1)[-1]  # py-spy shows qualified names
    return any(name == function and site.file_path.endswith(suffix) for suffix, function in places)


def package_of(file_path: str) -> str:
    """The package of a file: ``otel_openai_retry``, ``opentelemetry``, ``asyncio``, ..."""
    path = file_path.replace("\\", "/")
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python" in path:  # the standard library: its module or package
        rest = path.split("/lib/python", 1)[1].split("/", 1)[-1]
        return rest.split("/", 1)[0].removesuffix(".py")
    return path.rsplit("/", 1)[-1] or "?"


# -- attribution --------------------------------------------------------------------------------


@dataclass
class Attribution:
    """Sampled time sorted into the instrumentation's and the bare client's."""

    busy: float = 0.0
    overhead: float = 0.0
    owner: dict[Site, float] = field(default_factory=lambda: defaultdict(float))
    owner_callee: dict[tuple[Site, str], float] = field(default_factory=lambda: defaultdict(float))
    inclusive: dict[Site, float] = field(default_factory=lambda: defaultdict(float))
    package: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    component: dict[str, float] = field(default_factory=lambda: defaultdict(float))


COMPONENTS = (
    ("/opentelemetry/sdk/metrics/", "OpenTelemetry metrics SDK"),
    ("/opentelemetry/metrics/", "OpenTelemetry metrics SDK"),
    ("/opentelemetry/", "OpenTelemetry tracing SDK, context, attributes"),
    ("/tenacity/", "tenacity"),
    ("/otel_openai_retry/", "otel_openai_retry's own code"),
)


def component_of(site: Site) -> str:
    """Which part of the instrumentation a frame is (callees outside it folded in)."""
    path = site.file_path.replace("\\", "/")
    for marker, name in COMPONENTS:
        if marker in path:
            return name
    return "other"


def attribute(samples: Samples) -> Attribution:
    result = Attribution()
    for stack, amount in samples:
        # A C function (pyinstrument shows them) is charged to the Python code that called it.
        python_stack = [site for site in stack if not site.file_path.startswith("<built-in>")]
        if not python_stack or python_stack[-1].is_idle:
            continue
        result.busy += amount
        owner_index: int | None = None
        for index in range(len(python_stack) - 1, -1, -1):
            site = python_stack[index]
            if site.is_sdk_entry:
                break
            if site.is_instrumentation:
                owner_index = index
                break
        if owner_index is None:
            continue
        owner = python_stack[owner_index]
        result.overhead += amount
        result.owner[owner] += amount
        if owner_index + 1 < len(python_stack):
            callee = python_stack[owner_index + 1]
            result.owner_callee[owner, f"{callee.package}.{callee.function}"] += amount
        result.package[python_stack[-1].package] += amount
        result.component[component_of(owner)] += amount
        for site in set(python_stack):
            if site.is_instrumentation:
                result.inclusive[site] += amount
    return result


def _print_report(result: Attribution, overhead_us: float, top: int) -> None:
    """Shares from the samples; µs/call scaled so that they add up to the measured overhead."""

    def per_call(amount: float) -> float:
        return amount / result.overhead * overhead_us if result.overhead else 0.0

    def percent(amount: float) -> float:
        return amount / result.overhead * 100 if result.overhead else 0.0

    print(
        f"sampled: the instrumentation's frames hold {result.overhead / result.busy * 100:.1f} % "
        f"of the client's busy samples; below, '%' is a share of those, 'µs/call' that share "
        f"of the measured {overhead_us:.0f} µs/call"
    )

    print()
    print("By component (innermost instrumentation frame; callees outside it folded in):")
    for name, amount in sorted(result.component.items(), key=lambda item: -item[1]):
        print(f"{per_call(amount):8.1f} µs/call {percent(amount):6.2f} %  {name}")

    print()
    print(
        "Self time of instrumentation functions (callees outside otel_openai_retry, tenacity "
        "and opentelemetry folded in):"
    )
    header = f"{'µs/call':>8} {'%':>6}  {'function':<50} {'where':<40} biggest callee outside"
    print(header)
    print("-" * len(header))
    callees: dict[Site, list[tuple[float, str]]] = defaultdict(list)
    for (owner, callee), amount in result.owner_callee.items():
        callees[owner].append((amount, callee))
    for site, amount in sorted(result.owner.items(), key=lambda item: -item[1])[:top]:
        biggest = ""
        if callees[site]:
            callee_amount, callee = max(callees[site])
            biggest = f"{callee} ({per_call(callee_amount):.1f})"
        print(
            f"{per_call(amount):8.1f} {percent(amount):6.2f}  {site.name():<50.50} "
            f"{site.short():<40} {biggest}"
        )

    print()
    print("Inclusive time of instrumentation functions (the SDK's own work beneath excluded):")
    header = f"{'µs/call':>8} {'%':>6}  {'function':<50} where"
    print(header)
    print("-" * len(header))
    for site, amount in sorted(result.inclusive.items(), key=lambda item: -item[1])[:top]:
        print(
            f"{per_call(amount):8.1f} {percent(amount):6.2f}  {site.name():<50.50} {site.short()}"
        )

    print()
    print("The instrumentation's time by the package whose Python code runs (the leaf frame):")
    for package, amount in sorted(result.package.items(), key=lambda item: -item[1]):
        if per_call(amount) >= 0.5:
            print(f"{per_call(amount):8.1f} µs/call {percent(amount):6.2f} %  {package}")


# -- the samplers -------------------------------------------------------------------------------


def _pyinstrument_samples(root: Any) -> Samples:
    """Every (stack, exclusive seconds) of pyinstrument's tree; ``[self]`` frames fold up."""
    samples: Samples = []

    def walk(frame: Any, stack: list[Site]) -> Iterator[None]:
        stack.append(Site(frame.function, frame.file_path or "?", frame.line_no or 0))
        exclusive: float = frame.time
        for child in frame.children:
            if child.is_synthetic:
                continue
            exclusive -= child.time
            yield from walk(child, stack)
        if exclusive > 0:
            samples.append((list(stack), exclusive))
        stack.pop()
        yield None

    for _ in walk(root, []):
        pass
    return samples


_PY_SPY_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):(?P<line>\d+)\)$")


def _py_spy_samples(raw: str) -> Samples:
    """py-spy's ``raw`` (collapsed stacks) output: ``frame;frame;... count`` per line."""
    samples: Samples = []
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = []
        for frame in stack_text.split(";"):
            match = _PY_SPY_FRAME.match(frame)
            if match is None:
                stack.append(Site(frame, "?", 0))
            else:
                stack.append(Site(match["function"], match["path"], int(match["line"])))
        samples.append((stack, float(count)))
    return samples


def _py_spy_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "py-spy"
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is missing: pip install -e '.[bench]', or --sampler pyinstrument")
    return found


class _PySpy:
    """``py-spy record`` attached to this very process, from start() to stop()."""

    def __init__(self, rate: int, raw_path: Path, *, nonblocking: bool) -> None:
        self._rate = rate
        self._nonblocking = nonblocking
        self._raw_path = raw_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            _py_spy_binary(),
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            str(self._rate),
            "--function",
            "--full-filenames",
            "--format",
            "raw",
            "--output",
            str(self._raw_path),
        ]
        if self._nonblocking:
            command.append("--nonblocking")
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach; this process is idle meanwhile, which py-spy skips
        if self._process.poll() is not None:
            stderr = self._process.stderr.read().decode() if self._process.stderr else ""
            raise SystemExit(f"py-spy could not attach (needs ptrace permission): {stderr}")

    def stop(self) -> str:
        process = self._process
        assert process is not None
        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        return self._raw_path.read_text(encoding="utf-8")


# -- the run --------------------------------------------------------------------------------------


class LayerTimer:
    """CPU time spent inside one async method of the SDK (meaningful at concurrency 1 only)."""

    def __init__(self, owner: type, name: str) -> None:
        self.seconds = 0.0
        original = getattr(owner, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - started

        functools.update_wrapper(timed, original, assigned=("__module__", "__name__", "__doc__"))
        setattr(owner, name, timed)


@dataclass
class Calibration:
    """CPU per call, bare and instrumented, in the same process, taking turns."""

    total: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    post: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    request: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def print(self, name: str) -> None:
        print(
            "Measured CPU µs per call, concurrency 1, bare and instrumented taking turns "
            "in this process (the profiler off):"
        )
        print(f"{'':<16} {'whole call':>10} {'in post()':>10} {'SDK request()':>14}")
        for label in ("bare", name):
            print(
                f"{label:<16} {self.total[label]:>10.0f} {self.post[label]:>10.0f} "
                f"{self.request[label]:>14.0f}"
            )
        print(
            f"{'difference':<16} {self.total[name] - self.total['bare']:>+10.0f} "
            f"{self.overhead(name):>+10.0f} {self.request[name] - self.request['bare']:>+14.0f}"
        )
        print(
            "('in post()': everything below AsyncAPIClient.post, where the SDK calls request(); "
            "'SDK request()': the SDK's own request, beneath our wrapper, our response hook "
            "included)"
        )

    def overhead(self, name: str) -> float:
        return self.post[name] - self.post["bare"]


async def _calibrate(
    args: argparse.Namespace,
    variant: Variant,
    call: Callable[[], Awaitable[None]],
    timers: tuple[LayerTimer, LayerTimer],
) -> Calibration:
    calibration = Calibration()
    bare = Variant("bare")
    blocks = 10
    per_block = max(args.calls // blocks, 1)
    for block in range(blocks):
        order = (bare, variant) if block % 2 == 0 else (variant, bare)
        for current in order:
            current.enable()
            gc.collect()
            for timer in timers:
                timer.seconds = 0.0
            cpu0 = time.process_time()
            await run_calls(call, per_block, 1)
            cpu = time.process_time() - cpu0
            current.disable()
            share = 1e6 / (per_block * blocks)
            calibration.total[current.name] += cpu * share
            calibration.post[current.name] += timers[0].seconds * share
            calibration.request[current.name] += timers[1].seconds * share
    return calibration


async def _run(
    args: argparse.Namespace,
    variant: Variant,
    base_url: str,
    raw_path: Path,
    timers: tuple[LayerTimer, LayerTimer],
) -> tuple[Calibration, Any]:
    client = make_client(base_url)

    async def call() -> None:
        await chat_call(client)

    try:
        await run_calls(call, args.warmup, 1)
        variant.enable()
        await run_calls(call, args.warmup, args.concurrency)
        variant.disable()
        calibration = await _calibrate(args, variant, call, timers)
        variant.enable()
        gc.collect()
        if args.sampler == "py-spy":
            spy = _PySpy(args.rate, raw_path, nonblocking=args.nonblocking)
            spy.start()
            await run_calls(call, args.calls, args.concurrency)
            return calibration, spy.stop()
        from pyinstrument import Profiler

        profiler = Profiler(interval=1 / args.rate, async_mode="disabled")
        profiler.start()
        await run_calls(call, args.calls, args.concurrency)
        profiler.stop()
        return calibration, profiler
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant",
        default="ours",
        help="ours (default), ours-unsampled or ours-noop; see overhead.py --help",
    )
    parser.add_argument(
        "--sampler", choices=("py-spy", "pyinstrument"), default="py-spy", help="(default: py-spy)"
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=4000,
        help="measured (bare and instrumented), then profiled (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="of the profiled calls (default: 1)"
    )
    parser.add_argument("--warmup", type=int, default=300, help="(default: 300)")
    parser.add_argument("--rate", type=int, default=1000, help="samples/s (default: 1000)")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default: 25)")
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="py-spy: sample without pausing the process (cheaper, but many stacks come out "
        "truncated, which hides the instrumentation's frames)",
    )
    parser.add_argument("--raw", help="py-spy: keep the collapsed stacks in this file")
    parser.add_argument("--html", help="pyinstrument: write its HTML view of the profile here")
    parser.add_argument("--text", action="store_true", help="pyinstrument: print its call tree")
    args = parser.parse_args(argv)

    from openai._base_client import AsyncAPIClient

    # Before any instrumentation, so that ours wraps the timed request() and times nothing else.
    timers = (LayerTimer(AsyncAPIClient, "post"), LayerTimer(AsyncAPIClient, "request"))
    variant = setup_variant(args.variant, enable=False)
    with tempfile.TemporaryDirectory() as scratch:
        raw_path = Path(args.raw) if args.raw else Path(scratch) / "py-spy.txt"
        with fake_server() as server:
            calibration, profile = asyncio.run(
                _run(args, variant, server.base_url, raw_path, timers)
            )
    variant.shutdown()

    print(f"# {machine_description()}; {library_versions()}")
    print(
        f"# variant {args.variant}; profiled: {args.calls} calls at concurrency "
        f"{args.concurrency}, {args.sampler} at {args.rate} samples/s"
    )
    print("# reproduce: " + " ".join([sys.executable, *sys.argv]))
    print()
    calibration.print(args.variant)
    print()
    if isinstance(profile, str):
        samples = _py_spy_samples(profile)
    else:
        session = profile.last_session
        root = session.root_frame() if session is not None else None
        if root is None:
            raise SystemExit("the profiler recorded nothing")
        samples = _pyinstrument_samples(root)
    _print_report(attribute(samples), calibration.overhead(args.variant), args.top)
    if not isinstance(profile, str):
        if args.text:
            print()
            print(profile.output_text(unicode=True, color=False, show_all=False))
        if args.html:
            Path(args.html).write_text(profile.output_html(), encoding="utf-8")
            print(f"\nHTML profile: {args.html}")
    elif args.raw:
        print(f"\ncollapsed stacks (flamegraph.pl, speedscope): {args.raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
