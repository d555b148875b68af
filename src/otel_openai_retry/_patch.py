"""The patch point: ``SyncAPIClient.request`` and ``AsyncAPIClient.request``, wrapped once.

Every resource method of the SDK (``create``, ``parse``, ``with_raw_response``,
``with_streaming_response``, ``stream``) ends in ``request``, so wrapping it covers them all,
including LangChain's calls through ``with_raw_response``. Each attempt calls the original
``request`` with the SDK's own retries off, so one attempt is exactly one HTTP request.

``_process_response`` is wrapped too, only to learn the status code of the response that
succeeded; the current call is found through a context variable set around each attempt.
Another wrapper of ``request`` set lower in the class hierarchy is dealt with in ``_reach``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import wrapt
from openai._base_client import AsyncAPIClient, BaseClient, SyncAPIClient
from openai._streaming import AsyncStream, Stream

from ._call import Call, options_of
from ._explicit_retries import PUBLIC_CLIENTS, copy_wrapper, init_wrapper
from ._internal import report_internal_error
from ._loop import run_async, run_sync
from ._observers import add_observer_factory, remove_observer_factory
from ._reach import SENDING, Reach, is_resent, sending
from ._runtime import Runtime
from ._stream_hooks import stream_method_wrapper
from ._user_hooks import user_hooks_for_call

__all__ = ["Patch"]

_installed: list[Patch] = []

_current_call: ContextVar[Sequence[Call]] = ContextVar("otel_openai_retry_call", default=())
"""The call whose attempt is being sent, in a list emptied when the attempt ends: callbacks the
SDK schedules meanwhile (the 600 s timer of its timeout, cancelled but kept by the event loop)
keep a snapshot of the context, which must not keep the call, its client and its body alive."""


@dataclass(slots=True)
class Patch:
    """The installed wrappers, kept so that ``remove()`` takes out exactly these."""

    handles: list[tuple[type, str, Any]] = field(default_factory=list)
    reach: Reach | None = None
    active: bool = True
    """Cleared by ``remove()``: read on every call, so a flag rather than a search. A wrapper of
    ours still reached after ``remove()`` (a reference a peer keeps that we could not find) only
    passes the call through."""

    @staticmethod
    def installed() -> bool:
        """Whether the SDK's ``request`` goes through a retry loop of ours now."""
        return bool(_installed)

    @classmethod
    def install(cls, runtime: Runtime) -> Patch:
        patch = cls()
        _installed.append(patch)
        patch.reach = Reach(
            {
                AsyncAPIClient: _async_request_wrapper(runtime, patch),
                SyncAPIClient: _sync_request_wrapper(runtime, patch),
            }
        )
        patch.reach.install()
        patch._wrap(BaseClient, "_build_request", _build_request_wrapper)
        patch._wrap(AsyncAPIClient, "_process_response", _process_response_wrapper)
        patch._wrap(SyncAPIClient, "_process_response", _process_response_wrapper)
        patch._wrap(AsyncStream, "__stream__", stream_method_wrapper)
        patch._wrap(Stream, "__stream__", stream_method_wrapper)
        for client_class in PUBLIC_CLIENTS:
            patch._wrap(client_class, "__init__", patch._init_wrapper)
            patch._wrap(client_class, "copy", copy_wrapper)
            patch._wrap(client_class, "with_options", copy_wrapper)
        add_observer_factory(user_hooks_for_call)
        return patch

    def _wrap(self, owner: type, name: str, wrapper: Callable[..., Any]) -> None:
        handle = wrapt.wrap_function_wrapper(owner, name, wrapper)
        self.handles.append((owner, name, handle))

    def _init_wrapper(
        self, wrapped: Callable[..., None], instance: Any, args: Any, kwargs: Any
    ) -> None:
        if self.reach is not None:  # a class set up since we were installed (a user subclass)
            self.reach.check(type(instance))
        init_wrapper(wrapped, instance, args, kwargs)

    def remove(self) -> None:
        self.active = False
        _installed[:] = [patch for patch in _installed if patch is not self]
        remove_observer_factory(user_hooks_for_call)
        if self.reach is not None:
            self.reach.remove()
        while self.handles:
            owner, name, handle = self.handles.pop()
            # Someone may have wrapped it on top of ours without wrapt: ours stays beneath theirs
            # (the request wrappers pass calls through once ``active`` is false), and every other
            # wrapper of ours is still undone.
            with contextlib.suppress(wrapt.WrapperNotOutermostError):
                wrapt.unwrap_object(owner, name, handle, missing_ok=True)


def _call_or_none(
    runtime: Runtime,
    instance: BaseClient[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    is_async: bool,
) -> Call | None:
    """The call, or ``None`` after a bug of ours setting it up (reported). Not inside the
    ``except``: the SDK's own path, taken then, must not carry our error as its context."""
    try:
        return Call(runtime, instance, args, kwargs, is_async=is_async)
    except Exception:
        report_internal_error("request setup")
        return None


def _async_request_wrapper(runtime: Runtime, patch: Patch) -> Callable[..., Awaitable[Any]]:
    async def request(
        wrapped: Callable[..., Awaitable[Any]],
        instance: BaseClient[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        # Removed, or an attempt of ours met again (see ``_reach.is_resent``).
        if not patch.active or (SENDING.get() and is_resent(options_of(args, kwargs))):
            return await wrapped(*args, **kwargs)
        call = _call_or_none(runtime, instance, args, kwargs, is_async=True)
        if call is None:  # our bug must not lose the call: the SDK's own path instead
            with sending():
                return await wrapped(*args, **kwargs)

        async def send(attempt: int) -> Any:
            options = call.options_for(attempt)
            current, sent = ([call] if attempt else []), [options]
            token, marked = _current_call.set(current), SENDING.set(sent)
            try:
                return await wrapped(
                    call.cast_to, options, stream=call.stream, stream_cls=call.stream_cls
                )
            finally:
                current.clear()  # emptied: a context snapshot kept by a timer keeps nothing
                sent.clear()
                SENDING.reset(marked)
                _current_call.reset(token)

        return await run_async(call.state, send, runtime.async_sleep)

    return request


def _sync_request_wrapper(runtime: Runtime, patch: Patch) -> Callable[..., Any]:
    def request(
        wrapped: Callable[..., Any],
        instance: BaseClient[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        # Removed, or an attempt of ours met again (see ``_reach.is_resent``).
        if not patch.active or (SENDING.get() and is_resent(options_of(args, kwargs))):
            return wrapped(*args, **kwargs)
        call = _call_or_none(runtime, instance, args, kwargs, is_async=False)
        if call is None:  # our bug must not lose the call: the SDK's own path instead
            with sending():
                return wrapped(*args, **kwargs)

        def send(attempt: int) -> Any:
            options = call.options_for(attempt)
            current, sent = ([call] if attempt else []), [options]
            token, marked = _current_call.set(current), SENDING.set(sent)
            try:
                return wrapped(
                    call.cast_to, options, stream=call.stream, stream_cls=call.stream_cls
                )
            finally:
                current.clear()  # emptied: a context snapshot kept by a timer keeps nothing
                sent.clear()
                SENDING.reset(marked)
                _current_call.reset(token)

        return run_sync(call.state, send, runtime.sync_sleep)

    return request


def _build_request_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Keep the headers of the request the SDK built for an attempt: credentials resolved per
    request (an Azure AD token provider) are in no option, and newer SDKs strip them from the
    request an error carries, which is what an error body's echo must be checked against."""
    if not SENDING.get():  # (the check ``went_around`` starts with, saving a call per attempt)
        for patch in _installed[-1:]:
            if patch.reach is not None:
                patch.reach.went_around(instance)
    request = wrapped(*args, **kwargs)
    for call in _current_call.get():
        call.built_headers[:] = (getattr(request, "headers", None),)
    return request


def _process_response_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    for call in _current_call.get():
        response = kwargs.get("response")
        if response is not None:
            call.response_received(response, bool(kwargs.get("stream")))
        if "retries_taken" in kwargs:  # the SDK counted only its own (none): the true count
            kwargs["retries_taken"] = call.state.attempts - 1
    return wrapped(*args, **kwargs)
