"""The observer that runs users' retry hooks (see ``_hooks``) before each sleep."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable

import tenacity

from ._hooks import RetryDetails, RetryHook, get_on_retry_hooks
from ._internal import report_internal_error
from ._observers import Observer

__all__ = ["UserHooks", "user_hooks_for_call"]


class UserHooks(Observer):
    __slots__ = ("_hooks",)

    def __init__(self, hooks: tuple[RetryHook, ...]) -> None:
        self._hooks = hooks

    def retrying(
        self, details: RetryDetails, retry_state: tenacity.RetryCallState
    ) -> Awaitable[object] | None:
        pending: list[Awaitable[object]] = []
        for hook in self._hooks:
            try:
                result = hook(details)
            except Exception:
                report_internal_error("retry hook")
                continue
            if result is not None and inspect.isawaitable(result):
                pending.append(result)
        if not pending:
            return None
        return pending[0] if len(pending) == 1 else _in_turn(pending)


def user_hooks_for_call(is_async: bool) -> UserHooks | None:
    hooks = get_on_retry_hooks()
    return UserHooks(hooks) if hooks else None


async def _in_turn(pending: list[Awaitable[object]]) -> None:
    for awaitable in pending:
        try:
            await awaitable
        except Exception:
            report_internal_error("retry hook")
