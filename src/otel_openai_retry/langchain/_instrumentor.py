"""``LangChainRetryInstrumentor``: switch the LangChain bridge on and off.

Nothing of LangChain's is imported to switch it on: each target module (see ``_targets``) is
patched at once if it is already imported, otherwise by a post-import hook when it is, so an
application pays for ``langchain_openai`` only if it uses it. ``uninstrument()`` removes every
wrapper, and hooks still waiting for their module then do nothing.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Collection
from types import ModuleType
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from ._patching import Patches
from ._targets import TARGETS

__all__ = ["LangChainRetryInstrumentor"]

_lock = threading.RLock()
_state: dict[str, Patches | None] = {"active": None}
_pending: set[str] = set()
"""Modules with a post-import hook registered and not fired yet (wrapt cannot unregister one)."""


class LangChainRetryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Report every retry of the OpenAI calls under a LangChain model run to that run.

    ``ChatOpenAI``, ``AzureChatOpenAI`` and ``langchain_openai.OpenAI`` (every ``invoke``,
    ``stream``, ``batch`` and structured-output path, sync and async) call ``on_retry`` on their
    run manager before each sleep and put ``langchain.run_id`` / ``langchain.parent_run_id`` on
    the logical span; ``langchain_community``'s ``acompletion_with_retry`` and
    ``completion_with_retry`` become :mod:`otel_openai_retry.langchain`'s. The retries
    themselves are :class:`~otel_openai_retry.OpenAIRetryInstrumentor`'s, which must be
    instrumented too (``import otel_openai_retry.auto`` does both).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("langchain-core >= 0.3",)

    def _instrument(self, **kwargs: Any) -> None:
        with _lock:
            _state["active"] = Patches()
            for name in TARGETS:
                module = sys.modules.get(name)
                if module is not None:
                    _apply(module)
                elif name not in _pending:
                    _pending.add(name)
                    # Fires at once, under this same (reentrant) lock, if imported meanwhile.
                    wrapt.register_post_import_hook(_imported, name)

    def _uninstrument(self, **kwargs: Any) -> None:
        with _lock:
            patches, _state["active"] = _state["active"], None
            if patches is not None:
                patches.remove()


def _imported(module: ModuleType) -> None:
    with _lock:
        _pending.discard(module.__name__)
        _apply(module)


def _apply(module: ModuleType) -> None:
    patches = _state["active"]
    if patches is not None and patches.claim(module):
        TARGETS[module.__name__](module, patches)
