"""Everything the wrappers need, built once at instrument time from a policy and providers.

The instrumentor builds its runtime here, and so does anything else that drives the wrappers
(tests): there is one way to wire the parts together. The metric names' generation is read from
``OTEL_SEMCONV_STABILITY_OPT_IN`` here, at instrument time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider, NoOpMeter
from opentelemetry.trace import NoOpTracer, TracerProvider

from . import _sleeps
from ._content import capture_enabled
from ._endpoints import Endpoints
from ._metrics import Instruments
from ._policy import RetryPolicy
from ._semconv import metric_names
from ._strategies import Strategies
from ._telemetry import Telemetry
from .version import __version__

__all__ = ["Runtime", "build_runtime"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the wrappers need, fixed at instrument time."""

    strategies: Strategies
    telemetry: Telemetry
    endpoints: Endpoints
    quiet: Telemetry
    """For calls made under ``suppress_instrumentation()``: no span, no measurement."""
    async_sleep: Callable[[float], Awaitable[None]] = _sleeps.async_sleep
    """The running loop's own sleep (asyncio, uvloop or trio, through anyio); instant under
    ``set_testing(True)``."""
    sync_sleep: Callable[[float], None] = _sleeps.sync_sleep


def build_runtime(
    policy: RetryPolicy,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    capture_content: bool | None = None,
) -> Runtime:
    """The runtime for ``policy``; providers default to the global ones, content capture to
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``."""
    tracer = trace.get_tracer(
        "otel_openai_retry", __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
    )
    meter = metrics.get_meter(
        "otel_openai_retry", __version__, meter_provider=meter_provider, schema_url=SCHEMA_URL
    )
    capture = capture_enabled() if capture_content is None else capture_content
    return Runtime(
        strategies=Strategies(policy),
        telemetry=Telemetry(
            tracer,
            Instruments(meter, metric_names()),
            capture,
            every_attempt=policy.attempt_spans == "all",
        ),
        endpoints=Endpoints(policy),
        quiet=Telemetry(NoOpTracer(), Instruments(NoOpMeter("otel_openai_retry")), False),
    )
