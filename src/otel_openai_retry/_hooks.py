"""Users' own retry hooks: one registration function and a frozen value describing each retry.

A hook is any callable taking a :class:`RetryDetails`; it runs before every sleep of every
instrumented call, after the attempt span has recorded the failure and before the next attempt.
On an async call a hook may return an awaitable, which is awaited before the sleep; a sync call
cannot wait for one, so there it is closed unawaited and reported. A hook that raises is
reported once and the call goes on: a logging hook's bug must not cost the user's request.
Tenacity never shows here: the hook API is ours to keep stable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

__all__ = ["RetryDetails", "RetryHook", "get_on_retry_hooks", "set_on_retry_hooks"]


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """A failed attempt that is about to be retried."""

    name: str
    """The logical call's span name: ``chat gpt-4o-mini``, ``GET /files/{file_id}``."""
    attempt: int
    """The attempt that failed, from 1."""
    exception: BaseException
    """What it failed with: the SDK's own exception, as the caller would have seen it."""
    sleep: float
    """Seconds chosen before the next attempt (the attempt span's sleep attribute)."""
    retry_after: float | None
    """The server's hint in seconds, when it sent one."""
    elapsed: float
    """Seconds since the logical call started."""


RetryHook = Callable[[RetryDetails], Awaitable[object] | object]
"""Called before each sleep; an awaitable it returns is awaited on async calls."""


class _Registered:
    hooks: tuple[RetryHook, ...] = ()


def set_on_retry_hooks(hooks: Iterable[RetryHook] | None) -> None:
    """Replace the registered hooks (``None`` or ``()`` removes them all)."""
    found = tuple(hooks or ())
    for hook in found:
        if not callable(hook):
            raise TypeError(f"a retry hook must be callable, not {type(hook).__name__}")
    _Registered.hooks = found


def get_on_retry_hooks() -> tuple[RetryHook, ...]:
    return _Registered.hooks
