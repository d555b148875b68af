"""The wrappers the bridge has installed, kept so that removing them restores LangChain exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import wrapt

__all__ = ["Patches"]


@dataclass(slots=True)
class Patches:
    """Every ``(owner, name, wrapper)`` installed, and which module objects were already done."""

    handles: list[tuple[object, str, Any]] = field(default_factory=list)
    modules: dict[str, ModuleType] = field(default_factory=dict)
    active: bool = True
    """False once removed: a wrapper that outlives its removal (see ``_targets``) steps aside."""

    def claim(self, module: ModuleType) -> bool:
        """True the first time ``module`` is seen: an import hook and a sweep may both offer it."""
        if self.modules.get(module.__name__) is module:
            return False
        self.modules[module.__name__] = module
        return True

    def wrap(self, owner: object, name: str, wrapper: Callable[..., Any]) -> None:
        handle = wrapt.wrap_function_wrapper(owner, name, wrapper)
        self.handles.append((owner, name, handle))

    def remove(self) -> None:
        """Unwrap in reverse order, so that nested wrappers come off cleanly."""
        self.active = False
        while self.handles:
            owner, name, handle = self.handles.pop()
            wrapt.unwrap_object(owner, name, handle, missing_ok=True)
        self.modules.clear()
