"""What the bridge patches, by the module that defines it.

Everything that binds a model run to its provider call lives in ``langchain_core``, for every
model at once (``ChatOpenAI``, ``AzureChatOpenAI``, ``langchain_openai.OpenAI``, community and
third-party models built on the OpenAI SDK alike), so that is where the wrappers go, rather than
on each provider's private methods:

- ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache`` receive the run manager of
  every ``invoke``/``batch``/``generate`` (structured output included), and call the provider's
  ``_generate`` or, when streaming to callbacks, ``_stream`` without it;
- ``BaseLLM._generate_helper`` / ``_agenerate_helper`` do the same for completion models;
- ``stream`` / ``astream`` of both create the run themselves: see ``_runs``;
- the callback managers' ``on_chat_model_start`` / ``on_llm_start`` are where that run is born.

``langchain_community``'s ``acompletion_with_retry`` / ``completion_with_retry`` (module
functions, a name imported from another module, and methods) become the drop-ins, which retry
where LangChain's no longer do and give ``OpenAIChat`` a client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import FunctionType, ModuleType
from typing import Any

from .._internal import logger
from ._completion import acompletion_with_retry, completion_with_retry
from ._patching import Patches
from ._wrappers import (
    Wrapper,
    capture_async,
    capture_sync,
    explicit_async,
    explicit_sync,
    stream_async,
    stream_sync,
)

__all__ = ["TARGETS"]

Patcher = Callable[[ModuleType, Patches], None]


def _methods(*methods: tuple[str, str, Wrapper]) -> Patcher:
    """Wrap ``class.method`` for each ``(class, method, wrapper)`` the module defines."""

    def patch(module: ModuleType, patches: Patches) -> None:
        for class_name, method, wrapper in methods:
            owner = getattr(module, class_name, None)
            if owner is None or method not in vars(owner):
                # A LangChain release without it: say what is not covered, patch the rest.
                logger.warning(
                    "otel-openai-retry: %s.%s.%s not found; LangChain runs through it will not "
                    "see on_retry",
                    module.__name__,
                    class_name,
                    method,
                )
                continue
            patches.wrap(owner, method, wrapper)

    return patch


_DROP_INS: Mapping[str, Callable[..., Any]] = {
    "acompletion_with_retry": acompletion_with_retry,
    "completion_with_retry": completion_with_retry,
}


def _calling(drop_in: Callable[..., Any], patches: Patches, *, method: bool) -> Wrapper:
    """A wrapper that calls ``drop_in`` instead; a method's ``self`` is its ``llm``.

    A module that imports the function by name while it is patched keeps this wrapper after
    the patch is removed, so once removed it calls the original again.
    """

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not patches.active:
            return wrapped(*args, **kwargs)
        if method:
            return drop_in(instance, *args, **kwargs)
        return drop_in(*args, **kwargs)

    return wrapper


def _replace_completion_functions(module: ModuleType, patches: Patches) -> None:
    """Module functions and methods of classes the module defines; plain functions only.

    A name bound to one of our wrappers already (imported from a patched module) is left alone.
    """
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__
    ]
    for name, drop_in in _DROP_INS.items():
        if type(vars(module).get(name)) is FunctionType:
            patches.wrap(module, name, _calling(drop_in, patches, method=False))
        for cls in classes:
            if type(vars(cls).get(name)) is FunctionType:
                patches.wrap(cls, name, _calling(drop_in, patches, method=True))


TARGETS: Mapping[str, Patcher] = {
    "langchain_core.callbacks.manager": _methods(
        ("CallbackManager", "on_chat_model_start", capture_sync),
        ("CallbackManager", "on_llm_start", capture_sync),
        ("AsyncCallbackManager", "on_chat_model_start", capture_async),
        ("AsyncCallbackManager", "on_llm_start", capture_async),
    ),
    "langchain_core.language_models.chat_models": _methods(
        ("BaseChatModel", "_generate_with_cache", explicit_sync("run_manager")),
        ("BaseChatModel", "_agenerate_with_cache", explicit_async("run_manager")),
        ("BaseChatModel", "stream", stream_sync),
        ("BaseChatModel", "astream", stream_async),
    ),
    "langchain_core.language_models.llms": _methods(
        ("BaseLLM", "_generate_helper", explicit_sync("run_managers")),
        ("BaseLLM", "_agenerate_helper", explicit_async("run_managers")),
        ("BaseLLM", "stream", stream_sync),
        ("BaseLLM", "astream", stream_async),
    ),
    "langchain_community.llms.openai": _replace_completion_functions,
    "langchain_community.llms.anyscale": _replace_completion_functions,
    "langchain_community.chat_models.openai": _replace_completion_functions,
}
"""Module name → what to patch in it, applied when the module is (or already was) imported."""
