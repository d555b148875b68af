"""Set up the OpenTelemetry SDK from the standard variables when nobody else has.

This delegates to the SDK's own configuration code (the same that ``opentelemetry-instrument``
runs), only choosing our documented defaults: OTLP for traces and metrics, over
``http/protobuf``. A provider the application installed itself is always kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from opentelemetry import metrics, trace

from ._errors import ConfigurationError

__all__ = ["configure_sdk_if_needed", "sdk_disabled"]

Signal = Literal["traces", "metrics"]

_EXPORTER_VARS: Mapping[Signal, str] = {
    "traces": "OTEL_TRACES_EXPORTER",
    "metrics": "OTEL_METRICS_EXPORTER",
}
_PROTOCOL_VARS: Mapping[Signal, str] = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
}


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """``OTEL_SDK_DISABLED`` as the SDK reads it: only ``true`` (any case) disables."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _has_real_tracer_provider() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _has_real_meter_provider() -> bool:
    from opentelemetry.metrics import _internal as metrics_internal

    return not isinstance(metrics.get_meter_provider(), metrics_internal._ProxyMeterProvider)


def _default_exporter_names(signal: Signal) -> list[str]:
    """Our defaults, used only where the variable is unset (the SDK reads it otherwise)."""
    if os.environ.get(_EXPORTER_VARS[signal], "").strip():
        return []
    # The signal's own variable wins over the general one, as in the OTLP exporters.
    variable = _PROTOCOL_VARS[signal]
    protocol = os.environ.get(variable, "").strip()
    if not protocol:
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = os.environ.get(variable, "").strip()
    if protocol == "grpc":
        return ["otlp_proto_grpc"]
    if protocol not in ("", "http/protobuf"):
        raise ConfigurationError(
            f"{variable}={protocol!r} is not supported; accepted: grpc, http/protobuf"
        )
    return ["otlp_proto_http"]


def configure_sdk_if_needed() -> bool:
    """Install SDK providers if none is installed; return whether we did."""
    if sdk_disabled() or _has_real_tracer_provider() or _has_real_meter_provider():
        return False
    from opentelemetry.sdk._configuration import _initialize_components

    _initialize_components(
        trace_exporter_names=_default_exporter_names("traces"),
        metric_exporter_names=_default_exporter_names("metrics"),
    )
    return True
