"""Following a chain of wrappers of ``request`` down to what each one calls.

A layer is followed where it says what it calls: a wrapt proxy's ``__wrapped__``, or the closure
cell that a ``functools.wraps`` wrapper's ``__wrapped__`` names (or that holds ours, once we put
it there). Each step yields the *slot* holding the next layer inward (a class attribute, an
instance attribute, a proxy, a cell), so that :mod:`._reach` can put ours there and back.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import wrapt

__all__ = ["NAME", "Slot", "chain", "classes", "describe"]

NAME = "request"


@dataclass(frozen=True, slots=True)
class Slot:
    """A place holding the next layer inward: a class attribute, a proxy, a closure cell."""

    get: Callable[[], Any]
    put: Callable[[Any], None]
    owner: type | None = None
    """The class, for its own attribute: ours goes there as a wrapt wrapper of its own."""
    bind: bool = False
    """Whether what is put there is called with the client as an argument (a cell)."""


def _class_slot(owner: type) -> Slot:
    return Slot(lambda: vars(owner).get(NAME), lambda v: setattr(owner, NAME, v), owner=owner)


def _inner(layer: Any, is_ours: Callable[[Any], bool]) -> tuple[Slot, Any] | None:
    """The slot holding what ``layer`` calls, and that, when we can tell (a cell that names
    something else than its wrapper's ``__wrapped__`` is followed only if we put ours there)."""
    if isinstance(layer, wrapt.BaseObjectProxy):
        proxy = layer

        def put(value: Any) -> None:
            proxy.__wrapped__ = value

        return Slot(lambda: proxy.__wrapped__, put), proxy.__wrapped__
    named = getattr(layer, "__wrapped__", None)  # functools.wraps says which cell it calls
    if isinstance(layer, types.FunctionType) and layer.__closure__ and named is not None:
        for cell in layer.__closure__:
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if contents is named or is_ours(contents):
                return Slot(_cell_get(cell), _cell_put(cell), bind=True), contents
    return None


def _cell_get(cell: types.CellType) -> Callable[[], Any]:
    return lambda: cell.cell_contents


def _cell_put(cell: types.CellType) -> Callable[[Any], None]:
    def put(value: Any) -> None:
        cell.cell_contents = value

    return put


def classes(base: type) -> Iterator[type]:
    seen: set[type] = set()
    pending: list[type] = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            pending.extend(cls.__subclasses__())
            yield cls


def _instance_slot(client: Any) -> Slot:
    fields = client.__dict__
    return Slot(lambda: fields.get(NAME), lambda v: fields.__setitem__(NAME, v))


def chain(
    cls: type, client: Any = None, is_ours: Callable[[Any], bool] = lambda _: False
) -> Iterator[tuple[Slot, Any]]:
    """``cls``'s own ``request`` (or ``client``'s) and each layer inward we can follow, with the
    slot holding it."""
    if client is None:
        slot, layer = _class_slot(cls), vars(cls).get(NAME)
    else:
        slot, layer = _instance_slot(client), client.__dict__.get(NAME)
    for _ in range(32):
        if layer is None:
            return
        yield slot, layer
        step = _inner(layer, is_ours)
        if step is None:
            return
        slot, layer = step


def describe(layer: Any) -> str:
    """``module.qualname`` of what a user would recognise as the wrapper."""
    target = getattr(layer, "_self_wrapper", layer)  # a wrapt wrapper: its wrapper function
    if not isinstance(target, (types.FunctionType, types.MethodType)):
        target = type(target)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
