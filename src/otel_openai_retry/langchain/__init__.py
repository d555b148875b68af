"""LangChain bridge: LangChain's run managers see every retry of the library's loop.

- :func:`acompletion_with_retry` / :func:`completion_with_retry`: drop-ins for
  ``langchain_community.llms.openai``'s, which on openai>=1 no longer retry with tenacity (and
  fail on ``OpenAIChat``). Same signature; they retry in the library's loop and call
  ``run_manager.on_retry(retry_state)`` before each sleep.
- :class:`LangChainRetryInstrumentor`: makes existing LangChain code do that with no change;
  ``import otel_openai_retry.auto`` switches it on when LangChain is installed.
- :func:`reporting_to`: report the retries of any OpenAI call made inside a block to a run
  manager of your own (a custom chain or tool).

Needs ``langchain-core`` (``pip install 'otel-openai-retry[langchain]'``).
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "otel_openai_retry.langchain needs LangChain: pip install 'otel-openai-retry[langchain]'"
    ) from exc

from ._completion import acompletion_with_retry, completion_with_retry
from ._instrumentor import LangChainRetryInstrumentor
from ._listener import reporting_to

__all__ = [
    "LangChainRetryInstrumentor",
    "acompletion_with_retry",
    "completion_with_retry",
    "reporting_to",
]
