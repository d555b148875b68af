"""Set up the OpenTelemetry SDK from the standard variables when nobody else has.

This delegates to the SDK's own configuration code (the same that ``opentelemetry-instrument``
runs), so each signal follows its own variable exactly as there (``OTEL_TRACES_EXPORTER``,
``OTEL_METRICS_EXPORTER``, ``OTEL_LOGS_EXPORTER``: a comma-separated list, ``none`` for nothing).
We only choose our documented defaults: OTLP for traces and metrics where their variable is
unset, over ``http/protobuf`` where no protocol variable is set. A provider the application
installed itself is always kept; the ones set up here get a bounded exit (:mod:`._exit`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal
from urllib.parse import urlsplit

from opentelemetry import _logs, metrics, trace

from ._errors import ConfigurationError
from ._exit import shutdown_at_exit

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
_PROTOCOL_VAR = "OTEL_EXPORTER_OTLP_PROTOCOL"
_OTLP_NAMES = ("otlp", "otlp_proto_http", "otlp_proto_grpc")
_GRPC_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.grpc"


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """``OTEL_SDK_DISABLED`` as the SDK reads it: only ``true`` (any case) disables."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _has_real_tracer_provider() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _has_real_meter_provider() -> bool:
    from opentelemetry.metrics import _internal as metrics_internal

    return not isinstance(metrics.get_meter_provider(), metrics_internal._ProxyMeterProvider)


def _protocol(signal: Signal) -> tuple[str, str]:
    """The protocol variable that decides for ``signal`` and its value (the signal's own
    variable wins over the general one, as in the OTLP exporters); checked here so that a bad
    value is reported under its own name before anything is set up."""
    for variable in (_PROTOCOL_VARS[signal], _PROTOCOL_VAR):
        protocol = os.environ.get(variable, "").strip()
        if protocol:
            break
    if protocol not in ("", "grpc", "http/protobuf"):
        raise ConfigurationError(
            f"{variable}={protocol!r} is not supported; accepted: grpc, http/protobuf"
        )
    return variable, protocol


def _grpc_exporter_installed() -> bool:
    try:
        return importlib.util.find_spec(_GRPC_EXPORTER_MODULE) is not None
    except ImportError:  # a parent package missing altogether
        return False


def _require_grpc_if_chosen(signal: Signal, names: list[str]) -> None:
    """The gRPC exporter is an extra (grpcio is large): where the settings choose it and it is
    not installed, say which setting chose it and what to install, before anything is set up,
    rather than the SDK's "component not found" about an entry point the user never named."""
    variable, protocol = _protocol(signal)
    chosen_by = None
    if "otlp_proto_grpc" in names:
        chosen_by = f"{_EXPORTER_VARS[signal]}=otlp_proto_grpc"
    elif protocol == "grpc" and "otlp" in names:
        chosen_by = f"{variable}=grpc"
    if chosen_by is not None and not _grpc_exporter_installed():
        raise ConfigurationError(
            f"{chosen_by} needs the OTLP gRPC exporter, which is not installed: "
            "pip install 'otel-openai-retry[grpc]' (or leave the protocol unset for "
            "http/protobuf)"
        )


def _default_exporter_names(signal: Signal) -> list[str]:
    """Our default where the signal's variable is unset; where it is set the SDK reads it."""
    written = os.environ.get(_EXPORTER_VARS[signal], "").strip()
    names = [name.strip() for name in written.split(",")] if written else ["otlp"]
    if any(name in _OTLP_NAMES for name in names):
        _require_grpc_if_chosen(signal, names)
    if written:
        return []
    return ["otlp_proto_grpc" if _protocol(signal)[1] == "grpc" else "otlp_proto_http"]


@contextmanager
def _http_protobuf_by_default() -> Iterator[None]:
    """For the time of the SDK's configuration only, ``http/protobuf`` where the general
    protocol variable is unset: the SDK itself reads a bare ``otlp`` as gRPC, which would make
    ``OTEL_TRACES_EXPORTER=otlp``, the spec's default written out, change the protocol."""
    if os.environ.get(_PROTOCOL_VAR, "").strip():  # a signal's own variable still wins over it
        yield
        return
    os.environ[_PROTOCOL_VAR] = "http/protobuf"
    try:
        yield
    finally:
        os.environ.pop(_PROTOCOL_VAR, None)


def _endpoint() -> str:
    """Where the OTLP exporters send, for the one line said at exit if nothing got there: its
    scheme, host and port only (a URL may carry credentials, in its user part or its query)."""
    for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = os.environ.get(variable, "").strip()
        if endpoint:
            return _where(endpoint)
    return "localhost (the default)"


def _where(endpoint: str) -> str:
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(an endpoint that is not a URL)"
    if not host:
        return "(an endpoint that is not a URL)"
    where = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{where}" + (f":{port}" if port is not None else "")


def configure_sdk_if_needed() -> bool:
    """Install SDK providers if none is installed; return whether we did."""
    if sdk_disabled() or _has_real_tracer_provider() or _has_real_meter_provider():
        return False
    from opentelemetry.sdk._configuration import _initialize_components

    logger_provider = _logs.get_logger_provider()
    trace_names = _default_exporter_names("traces")
    metric_names = _default_exporter_names("metrics")
    with _http_protobuf_by_default():
        _initialize_components(trace_exporter_names=trace_names, metric_exporter_names=metric_names)
    ours = [trace.get_tracer_provider(), metrics.get_meter_provider()]
    if _logs.get_logger_provider() is not logger_provider:  # OTEL_LOGS_EXPORTER named one
        ours.append(_logs.get_logger_provider())
    shutdown_at_exit(ours, _endpoint())
    return True
