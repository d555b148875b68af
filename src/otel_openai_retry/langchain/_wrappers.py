"""wrapt wrappers for LangChain's model and callback-manager methods (applied by ``_targets``).

Where a model run holds its run manager while the provider calls the SDK, the run manager is
made the current retry listener for that call:

- :func:`explicit_sync` / :func:`explicit_async`: methods that receive the run manager (or, for
  LLMs, the list whose first item LangChain hands to ``_generate``);
- :func:`stream_sync` / :func:`stream_async`: ``stream``/``astream``, which create theirs; each
  step runs inside a :class:`~._runs.StreamRun`, never between steps, so the listener does not
  leak into the consumer's code between chunks;
- :func:`capture_sync` / :func:`capture_async`: the callback manager's start methods, which bind
  the run they create to the open stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from ._listener import AnyRunManager, reporting_to
from ._runs import StreamRun, bind_started_run

__all__ = [
    "Wrapper",
    "capture_async",
    "capture_sync",
    "explicit_async",
    "explicit_sync",
    "stream_async",
    "stream_sync",
]

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_RUN_MANAGER_POSITION = 2
"""``(messages_or_prompts, stop, run_manager_or_run_managers, ...)`` in every wrapped method."""


def _run_manager(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AnyRunManager | None:
    value = kwargs.get(name)
    if value is None and len(args) > _RUN_MANAGER_POSITION:
        value = args[_RUN_MANAGER_POSITION]
    if isinstance(value, list):  # LLMs: LangChain calls _generate with the first one
        value = value[0] if value else None
    return value if isinstance(value, AnyRunManager) else None


def explicit_sync(parameter: str) -> Wrapper:
    """For a sync method whose ``parameter`` is the run manager (or a list of them)."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        with reporting_to(_run_manager(parameter, args, kwargs)):
            return wrapped(*args, **kwargs)

    return wrapper


def explicit_async(parameter: str) -> Wrapper:
    """The coroutine twin of :func:`explicit_sync`."""

    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        with reporting_to(_run_manager(parameter, args, kwargs)):
            return await wrapped(*args, **kwargs)

    return wrapper


def stream_sync(
    wrapped: Callable[..., Iterator[Any]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Iterator[Any]:
    run = StreamRun()
    with run.step():
        iterator = iter(wrapped(*args, **kwargs))
    try:
        while True:
            with run.step():
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


async def stream_async(
    wrapped: Callable[..., AsyncIterator[Any]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncIterator[Any]:
    run = StreamRun()
    with run.step():
        iterator = wrapped(*args, **kwargs).__aiter__()
    try:
        while True:
            with run.step():
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def capture_sync(
    wrapped: Callable[..., list[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[Any]:
    run_managers = wrapped(*args, **kwargs)
    bind_started_run(run_managers)
    return run_managers


async def capture_async(
    wrapped: Callable[..., Awaitable[list[Any]]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> list[Any]:
    run_managers = await wrapped(*args, **kwargs)
    bind_started_run(run_managers)
    return run_managers
