"""Every telemetry name this library emits, and which generation of the GenAI metric names.

Our own attributes and metrics live under ``openai_retry.``: OpenTelemetry's naming rules
reserve bare namespaces such as ``retry.`` for future conventions. Durations are in seconds with
no unit suffix, as the GenAI conventions write them.

The GenAI metric names changed in the conventions (``gen_ai.client.inference.*``, token usage as
counters by modality). As the conventions ask of instrumentations that already emitted the older
names, ``OTEL_SEMCONV_STABILITY_OPT_IN`` chooses: unset, the older names (those the official
OpenAI instrumentation emits, so that dashboards built for it keep working beside ours);
``gen_ai_latest_experimental``, the current ones; ``gen_ai_latest_experimental/dup``, both. The
variable is a comma-separated list, read exactly as ``opentelemetry-instrumentation`` reads it
(each value stripped, case-sensitive), plus the ``/dup`` form the GenAI conventions leave to
instrumentations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ATTEMPT",
    "ATTEMPTS",
    "CALL_RETRIES",
    "CALL_RETRY_DELAY",
    "FAILED_ATTEMPTS",
    "OUTCOME",
    "RATE_LIMITING_REQUESTS",
    "RATE_LIMITING_RESULT",
    "RATE_LIMITING_TIME_IN_QUEUE",
    "RETRY_AFTER",
    "SLEEP",
    "STABILITY_ENV_VAR",
    "THROTTLE",
    "TOTAL_SLEEP",
    "TOTAL_THROTTLE",
    "MetricNames",
    "metric_names",
]

# -- span attributes -----------------------------------------------------------------------------

ATTEMPT = "openai_retry.attempt"
"""Attempt span: its number, from 1."""
RETRY_AFTER = "openai_retry.retry_after"
"""Attempt span: the wait the server asked for, seconds."""
SLEEP = "openai_retry.sleep"
"""Attempt span: the sleep that followed it, seconds."""
THROTTLE = "openai_retry.throttle"
"""Attempt span: how long pacing held it back, seconds."""
ATTEMPTS = "openai_retry.attempts"
"""Logical span: attempts sent."""
TOTAL_SLEEP = "openai_retry.total_sleep"
TOTAL_THROTTLE = "openai_retry.total_throttle"
OUTCOME = "openai_retry.outcome"

HEADER_ATTRIBUTE_PREFIX = "http.response.header."
"""The allow-listed response headers of a failed attempt, as the HTTP conventions name them."""

# -- our metrics -----------------------------------------------------------------------------------

CALL_RETRIES = "openai_retry.client.call.retries"
CALL_RETRY_DELAY = "openai_retry.client.call.retry_delay"
FAILED_ATTEMPTS = "openai_retry.client.failed_attempts"
RATE_LIMITING_TIME_IN_QUEUE = "openai_retry.client.rate_limiting.time_in_queue"
RATE_LIMITING_REQUESTS = "openai_retry.client.rate_limiting.requests"
RATE_LIMITING_RESULT = "openai_retry.rate_limiting.result"

# -- which GenAI metric names ----------------------------------------------------------------------

STABILITY_ENV_VAR = "OTEL_SEMCONV_STABILITY_OPT_IN"
_LATEST = "gen_ai_latest_experimental"
_BOTH = "gen_ai_latest_experimental/dup"


@dataclass(frozen=True, slots=True)
class MetricNames:
    """Which generations of the GenAI metric names to record."""

    older: bool
    """``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and
    ``gen_ai.client.operation.time_to_first_chunk``."""
    current: bool
    """``gen_ai.client.inference.duration``, ``gen_ai.client.inference.time_to_first_chunk`` and
    the ``gen_ai.client.inference.usage.*`` counters."""


def metric_names(environ: Mapping[str, str] | None = None) -> MetricNames:
    env = os.environ if environ is None else environ
    values = {value.strip() for value in env.get(STABILITY_ENV_VAR, "").split(",")}
    if _BOTH in values:
        return MetricNames(older=True, current=True)
    if _LATEST in values:
        return MetricNames(older=False, current=True)
    return MetricNames(older=True, current=False)
