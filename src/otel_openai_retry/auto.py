"""``import otel_openai_retry.auto``: the one line an application adds.

Reads ``OTEL_OPENAI_RETRY_ENABLED``; unless it is false (or ``openai_retry`` is among
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``), sets up the OpenTelemetry SDK from the
standard ``OTEL_*`` variables when the application has not installed providers itself, then
instruments the OpenAI SDK with the policy from ``OTEL_OPENAI_RETRY_*``. Retries work even when
telemetry is disabled (``OTEL_SDK_DISABLED=true``). Importing it again changes nothing.

When LangChain is installed, its run managers are told about every retry too (see
:mod:`otel_openai_retry.langchain`); when it is not, nothing of it is imported.
"""

from __future__ import annotations

import os

from ._instrumentor import OpenAIRetryInstrumentor
from ._policy import ENABLED_ENV_VAR, RetryPolicy, parse_bool
from ._sdk_setup import configure_sdk_if_needed

__all__: list[str] = []


DISABLED_ENV_VAR = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
"""The instrumentations ``opentelemetry-instrument`` leaves out, by entry point name."""


def _disabled() -> bool:
    """``openai_retry`` among the disabled instrumentations, read as ``opentelemetry-instrument``
    reads the variable (comma-separated names, each stripped; ``*`` for all of them)."""
    names = {name.strip() for name in os.environ.get(DISABLED_ENV_VAR, "").split(",")}
    return "openai_retry" in names or "*" in names


def _activate() -> None:
    if not parse_bool(ENABLED_ENV_VAR, default=True) or _disabled():
        return
    instrumentor = OpenAIRetryInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    policy = RetryPolicy.from_env()  # a bad variable fails here, before anything is changed
    configure_sdk_if_needed()
    instrumentor.instrument(policy=policy)  # the LangChain bridge too, when it is installed


_activate()
