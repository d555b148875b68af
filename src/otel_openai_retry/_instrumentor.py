"""``OpenAIRetryInstrumentor``: the OpenTelemetry-standard way to switch the library on and off."""

from __future__ import annotations

from collections.abc import Collection
from importlib.util import find_spec
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from ._internal import logger
from ._patch import Patch
from ._policy import ENABLED_ENV_VAR, RetryPolicy, parse_bool
from ._runtime import Runtime, build_runtime
from .package import _instruments

__all__ = ["OpenAIRetryInstrumentor"]


class OpenAIRetryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Route every OpenAI SDK request through one retry loop and trace every attempt.

    ``instrument(tracer_provider=..., meter_provider=..., policy=...)``: providers default to the
    global ones; without ``policy`` the ``OTEL_OPENAI_RETRY_*`` variables are read at that moment,
    and a bad value raises :class:`~otel_openai_retry.ConfigurationError`. ``uninstrument()``
    restores the SDK's methods exactly. A singleton, like every ``BaseInstrumentor``.
    """

    _patch: Patch | None = None
    _runtime: Runtime | None = None
    _langchain: BaseInstrumentor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        policy = kwargs.get("policy")
        if policy is None:
            policy = RetryPolicy.from_env()
        elif not isinstance(policy, RetryPolicy):
            raise TypeError(f"policy must be a RetryPolicy, not {type(policy).__name__}")
        if not parse_bool(ENABLED_ENV_VAR, default=True):
            logger.info("%s is false: OpenAI calls are not patched", ENABLED_ENV_VAR)
            return
        runtime = build_runtime(policy, kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        self._patch = Patch.install(runtime)
        self._runtime = runtime
        self._langchain = _instrument_langchain()

    def _uninstrument(self, **kwargs: Any) -> None:
        patch, self._patch = self._patch, None
        runtime, self._runtime = self._runtime, None
        bridge, self._langchain = self._langchain, None
        try:
            if patch is not None:
                patch.remove()
        finally:
            if runtime is not None:
                runtime.endpoints.close()  # a fleet's reporter thread and Redis connections
            if bridge is not None:
                bridge.uninstrument()


def _instrument_langchain() -> BaseInstrumentor | None:
    """Tell LangChain's run managers of every retry, when LangChain is installed.

    Here rather than in ``auto`` so that ``opentelemetry-instrument`` users get it too. Nothing
    of LangChain is imported when it is absent; a LangChain we cannot work with only warns.
    """
    if find_spec("langchain_core") is None:
        return None
    try:
        from .langchain import LangChainRetryInstrumentor
    except ImportError:
        logger.warning("otel-openai-retry: LangChain bridge not activated", exc_info=True)
        return None
    bridge = LangChainRetryInstrumentor()
    if bridge.is_instrumented_by_opentelemetry:
        return None  # switched on by the application itself: leave it to it
    bridge.instrument()
    return bridge
