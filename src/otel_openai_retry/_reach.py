"""Our ``request`` wrapper must be reached even when something else sets ``request`` lower down.

We wrap ``request`` on the SDK's base classes (``SyncAPIClient``/``AsyncAPIClient``). Another
instrumentation (OpenInference, Logfire) may set ``request`` on ``OpenAI``/``AsyncOpenAI`` or on
a user's subclass: attribute lookup finds that first, and if it captured the SDK's function before
we wrapped it, our loop never runs and the SDK's own retries come back. Putting ours outside
theirs would make their inference span once per attempt; so ours goes *beneath* theirs, where it
would be had we been installed first: the reference in their wrapper that holds the SDK's
function (a wrapt proxy's ``__wrapped__``, or the closure cell that a ``functools.wraps``
wrapper's ``__wrapped__`` names) is pointed at ours. A class attribute that is the SDK's function
itself (what a peer's uninstrument puts back) is wrapped there. This runs at instrument time,
when a client is built, and when a call is found to have gone around our loop.

Going around is detected where it cannot be missed: the SDK's own loop builds every request with
``_build_request``, which we wrap; one built while no attempt of ours is in flight went around
us. What we cannot reach is named in one warning. ``remove()`` puts every reference back, and
points a peer's reference to ours (a peer installed after us) at the SDK's function, so the peer
keeps working and nothing of ours is left on its path; a reference to ours that we cannot find
only passes calls through.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import wrapt

from ._internal import guarded, logger
from ._reach_chain import NAME, Slot, chain, classes, describe

__all__ = ["SENDING", "Reach", "sending"]

_PLACED_HERE = "_otel_openai_retry_placed"
"""On a client whose own ``request`` we reached: what we placed in it, to put back. Kept on the
client rather than by us, so that a client dropped by the application is freed with it."""
_sending: ContextVar[Sequence[object]] = ContextVar("otel_openai_retry_sending", default=())
SENDING = _sending
"""The options of the attempt we are sending, in a list emptied when it ends (a callback
scheduled meanwhile keeps the context, which must not keep the request's body alive); our
``request`` wrappers set and reset it around each attempt directly, as a generator context
manager per attempt costs more than the two calls."""


@contextmanager
def sending(options: object | None = None) -> Iterator[None]:
    """Mark the SDK's ``request`` being run by us, with these options, for this attempt
    (without: run by us, the call's setup having failed)."""
    current = [object() if options is None else options]
    token = _sending.set(current)
    try:
        yield
    finally:
        current.clear()
        _sending.reset(token)


def is_resent(options: object) -> bool:
    """The options of the attempt we are sending: a wrapper of ours deeper in the chain passes
    it through, so one call has one loop however many of our wrappers it meets."""
    current = _sending.get()
    return options is not None and bool(current) and current[0] is options


@dataclass(slots=True)
class Reach:
    """Our wrappers of ``request`` and every reference to them we placed (see the module)."""

    wrappers: dict[type, Callable[..., Any]]
    """Per SDK base class, our wrapper function of ``request``."""
    handles: dict[type, Any] = field(default_factory=dict)
    """Per SDK base class, our wrapt wrapper installed on it."""
    placed: list[tuple[Slot, Any, Any]] = field(default_factory=list)
    """(slot, what it held, what of ours we put there), to put back."""
    clients: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    """Clients holding placements of ours (see ``_PLACED_HERE``), while they live."""
    extra: list[tuple[type, Any]] = field(default_factory=list)
    """Our wrappers on subclasses whose own ``request`` is the bare SDK function."""
    warned: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        for base, wrapper in self.wrappers.items():
            self.handles[base] = wrapt.wrap_function_wrapper(base, NAME, wrapper)
            for cls in classes(base):
                self._reach(base, cls)

    def _ours(self, layer: Any) -> Any:
        """The handle of ours ``layer`` is (or a binding of), else ``None``."""
        if isinstance(layer, wrapt.BoundFunctionWrapper):
            layer = layer._self_parent
        for handle in (*self.handles.values(), *(handle for _, handle in self.extra)):
            if layer is handle:
                return handle
        return None

    @guarded  # a bug of ours here must not fail the client's construction or call
    def _reach(self, base: type, cls: type, client: Any = None) -> bool:
        """Make ``cls``'s own ``request`` (or ``client``'s) reach ours if it ends in the SDK's
        function captured before we wrapped it; whether ours was put somewhere now."""
        handle = self.handles[base]
        with self.lock:  # two clients built at once must not both wrap the same class
            for slot, layer in chain(cls, client, self._is_ours):
                if self._ours(layer) is not None:
                    return False
                if isinstance(layer, types.MethodType) and layer.__func__ is handle.__wrapped__:
                    ours = handle.__get__(layer.__self__, type(layer.__self__))  # one client's
                    slot.put(ours)
                    self._record(client, (slot, layer, ours))
                    return True
                if layer is handle.__wrapped__:
                    if slot.owner is not None:
                        ours = wrapt.wrap_function_wrapper(slot.owner, NAME, self.wrappers[base])
                        self.extra.append((slot.owner, ours))
                    else:
                        ours = handle.__get__(None, cls) if slot.bind else handle
                        slot.put(ours)
                        self._record(client, (slot, layer, ours))
                    return True
        return False

    def _record(self, client: Any, placement: tuple[Slot, Any, Any]) -> None:
        if client is not None:
            try:
                self.clients.add(client)
            except TypeError:  # a client class without weak references: kept until remove()
                pass
            else:
                client.__dict__.setdefault(_PLACED_HERE, []).append(placement)
                return
        self.placed.append(placement)

    @guarded  # a bug of ours here must not fail the client's construction or call
    def check(self, cls: type) -> bool:
        """At a client's construction: its class and those between it and the SDK's base (set
        up since we were installed); whether ours had to be put somewhere."""
        placed = False
        for base in self.handles:
            if issubclass(cls, base):
                for owner in cls.__mro__[: cls.__mro__.index(base)]:
                    if NAME in vars(owner):
                        placed = self._reach(base, owner) or placed
        return placed

    @guarded  # a bug of ours here must not fail the client's construction or call
    def went_around(self, client: Any) -> None:
        """A request was built while no attempt of ours was in flight: say by whom, once, and
        make the next call reach us if we can."""
        if _sending.get():
            return
        cls = type(client)
        own = getattr(client, "__dict__", {}).get(NAME)
        owner = next((c for c in cls.__mro__ if NAME in vars(c)), cls)
        layer, where = (
            (own, "the client instance")
            if own is not None
            else (vars(owner).get(NAME), f"{owner.__module__}.{owner.__qualname__}")
        )
        name = f"{describe(layer)} (set as `request` on {where})"
        healed = self.check(cls)  # e.g. a peer's uninstrument put back what it had found
        base = next((base for base in self.handles if isinstance(client, base)), None)
        if own is not None and base is not None:  # a wrapper set on this client alone
            healed = self._reach(base, cls, client) or healed
        if not healed and self._leads_to_ours(owner, client if own is not None else None):
            return  # reached already: a later attempt of the SDK's own loop, after the first
        if healed:
            logger.info(
                "otel-openai-retry: %s held the SDK's method from before we were instrumented "
                "and went around the retry loop once; later calls go through it",
                name,
            )
        elif name not in self.warned:
            self.warned.add(name)
            logger.warning(
                "otel-openai-retry: an OpenAI call went around the retry loop through %s, "
                "which does not call ours; it got the SDK's own retries and no attempt spans. "
                "Set that wrapper up after instrumenting otel-openai-retry, or without replacing "
                "`request` (logged once)",
                name,
            )

    def _leads_to_ours(self, cls: type, client: Any) -> bool:
        return any(self._is_ours(layer) for _, layer in chain(cls, client, self._is_ours))

    def _is_ours(self, layer: Any) -> bool:
        return self._ours(layer) is not None

    def remove(self) -> None:
        """Put back what we placed and point references to ours at what ours wrapped."""
        for client in list(self.clients):
            self.placed.extend(client.__dict__.pop(_PLACED_HERE, ()))
        self.clients.clear()
        while self.placed:
            slot, held, ours = self.placed.pop()
            if slot.get() is ours:
                slot.put(held)
        for base in self.handles:
            for cls in (base, *classes(base)):
                for slot, layer in chain(cls, None, self._is_ours):
                    # A reference to ours in a peer's wrapper (a peer set up after us), or one
                    # a peer's uninstrument put back on a class: to what ours wraps. Ours on a
                    # class itself comes off by unwrapping, below.
                    handle = self._ours(layer)
                    if handle is not None and not (slot.owner is not None and layer is handle):
                        slot.put(handle.__wrapped__)
        while self.extra:
            owner, handle = self.extra.pop()
            _unwrap(owner, handle)
        for base, handle in self.handles.items():
            _unwrap(base, handle)
        self.handles.clear()


def _unwrap(owner: type, handle: Any) -> None:
    try:
        wrapt.unwrap_object(owner, NAME, handle, missing_ok=True)
    except wrapt.WrapperNotOutermostError:  # beneath a wrapper we could not follow
        logger.debug("otel-openai-retry: %s.%s left as a pass-through", owner.__qualname__, NAME)
