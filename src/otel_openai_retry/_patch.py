"""The patch point: ``SyncAPIClient.request`` and ``AsyncAPIClient.request``, wrapped once.

Every resource method of the SDK (``create``, ``parse``, ``with_raw_response``,
``with_streaming_response``, ``stream``) ends in ``request``, so wrapping it covers them all,
including LangChain's calls through ``with_raw_response``. Each attempt calls the original
``request`` with the SDK's own retries off, so one attempt is exactly one HTTP request.

``_process_response`` is wrapped too, only to learn the status code of the response that
succeeded; the current call is found through a context variable set around each attempt.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import wrapt
from openai._base_client import AsyncAPIClient, BaseClient, SyncAPIClient
from openai._models import FinalRequestOptions
from openai._streaming import AsyncStream, Stream
from openai._types import NotGiven
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from ._attempt_options import cap_timeout, max_attempts, sent_header_values
from ._attributes import describe_request
from ._call_state import CallState
from ._call_tokens import used_tokens
from ._companion import CompanionTelemetry, peer_span
from ._endpoints import EndpointGuard
from ._explicit_retries import PUBLIC_CLIENTS, copy_wrapper, init_wrapper
from ._internal import report_internal_error
from ._loop import run_async, run_sync
from ._observers import add_observer_factory, observers_for_call, remove_observer_factory
from ._replay import capture_body
from ._runtime import Runtime
from ._sendable import headers_sendable
from ._servers import server_of
from ._stream_hooks import stream_method_wrapper
from ._telemetry import CallTelemetry
from ._token_estimate import estimate_tokens
from ._user_hooks import user_hooks_for_call

__all__ = ["Patch"]

_installed: list[Patch] = []

_current_call: ContextVar[_Call | None] = ContextVar("otel_openai_retry_call", default=None)


@dataclass(slots=True)
class Patch:
    """The installed wrappers, kept so that ``remove()`` takes out exactly these."""

    handles: list[tuple[type, str, Any]] = field(default_factory=list)

    @staticmethod
    def installed() -> bool:
        """Whether the SDK's ``request`` goes through a retry loop of ours now."""
        return bool(_installed)

    @classmethod
    def install(cls, runtime: Runtime) -> Patch:
        patch = cls()
        _installed.append(patch)
        patch._wrap(AsyncAPIClient, "request", _async_request_wrapper(runtime))
        patch._wrap(SyncAPIClient, "request", _sync_request_wrapper(runtime))
        patch._wrap(BaseClient, "_build_request", _build_request_wrapper)
        patch._wrap(AsyncAPIClient, "_process_response", _process_response_wrapper)
        patch._wrap(SyncAPIClient, "_process_response", _process_response_wrapper)
        patch._wrap(AsyncStream, "__stream__", stream_method_wrapper)
        patch._wrap(Stream, "__stream__", stream_method_wrapper)
        for client_class in PUBLIC_CLIENTS:
            patch._wrap(client_class, "__init__", init_wrapper)
            patch._wrap(client_class, "copy", copy_wrapper)
            patch._wrap(client_class, "with_options", copy_wrapper)
        add_observer_factory(user_hooks_for_call)
        return patch

    def _wrap(self, owner: type, name: str, wrapper: Callable[..., Any]) -> None:
        handle = wrapt.wrap_function_wrapper(owner, name, wrapper)
        self.handles.append((owner, name, handle))

    def remove(self) -> None:
        _installed[:] = [patch for patch in _installed if patch is not self]
        remove_observer_factory(user_hooks_for_call)
        while self.handles:
            owner, name, handle = self.handles.pop()
            wrapt.unwrap_object(owner, name, handle, missing_ok=True)


class _Call:
    """One intercepted ``request``: what every attempt shares, for both drivers."""

    __slots__ = (
        "built_headers",
        "cast_to",
        "client",
        "deadline",
        "guard",
        "headers_sendable",
        "options",
        "spans",
        "state",
        "stream",
        "stream_cls",
    )

    def __init__(
        self,
        runtime: Runtime,
        client: BaseClient[Any, Any],
        args: Any,
        kwargs: Any,
        is_async: bool,
    ) -> None:
        cast_to, options, stream, stream_cls = _bind(*args, **kwargs)
        if (
            client._idempotency_header
            and options.idempotency_key is None
            and options.method.lower() != "get"
        ):
            # One key for every attempt, as the SDK's own loop does.
            options = options.model_copy(update={"idempotency_key": client._idempotency_key()})
        self.client = client
        self.built_headers: list[object] = []
        """The headers of the request last built for an attempt (no cycle back to this call)."""
        self.cast_to = cast_to
        self.options = options
        self.stream = stream
        self.stream_cls = stream_cls
        server = server_of(client)
        info = describe_request(
            method=options.method,
            url=options.url,
            json_data=options.json_data,
            provider=server.provider,
            host=server.host,
            port=server.port,
            scheme=server.scheme,
            stream=stream,
        )
        model = info.attributes.get("gen_ai.request.model", "")
        others = observers_for_call(is_async)
        for observer in others:  # before the span starts, so that samplers see them
            info.attributes.update(observer.span_attributes)
        enabled = is_instrumentation_enabled()
        telemetry = runtime.telemetry if enabled else runtime.quiet
        sent = functools.partial(sent_header_values, client, options, self.built_headers)
        outer = peer_span(info.operation is not None) if enabled else None
        self.spans: CallTelemetry | CompanionTelemetry = (
            CallTelemetry(telemetry, info, options.json_data, sent)
            if outer is None
            else CompanionTelemetry(telemetry, info, outer, sent)
        )
        self.guard: EndpointGuard = runtime.endpoints.guard(server.base_url, str(model))
        self.headers_sendable = headers_sendable(client, options)
        self.state = CallState(
            runtime.strategies,
            (self.spans, *others),
            max_attempts(client, options, runtime.strategies),
            self.guard,
            capture_body(getattr(options, "content", None), options.files),
            self.sendable,
            info.span_name,
            self,
        )
        self.deadline = self.state.deadline

    def sendable(self) -> bool:
        """Whether the transport would put this request on the wire (see ``CallState``)."""
        return self.headers_sendable and not self.client.is_closed()  # type: ignore[attr-defined]

    def estimate(self) -> int:
        """The request's tokens as the server estimates them; asked only while pacing tokens."""
        return estimate_tokens(self.options.json_data)

    def used(self, result: object) -> int | None:
        return used_tokens(result)

    def options_for(self, attempt: int) -> FinalRequestOptions:
        """The SDK's retries off, the true retry count on the wire, the deadline respected."""
        options = self.options
        if attempt == 0:  # not an attempt: the SDK, unobserved, raises what it raises
            return options.model_copy(update={"max_retries": 0})
        headers: Mapping[str, Any] = (
            {} if isinstance(options.headers, NotGiven) else options.headers
        )
        update: dict[str, Any] = {
            "max_retries": 0,
            "headers": {**headers, "x-stainless-retry-count": str(attempt - 1)},
        }
        if self.deadline is not None:
            configured = (
                self.client.timeout if isinstance(options.timeout, NotGiven) else options.timeout
            )
            update["timeout"] = cap_timeout(configured, self.deadline - time.monotonic())
        return options.model_copy(update=update)

    def response_received(self, response: Any, stream: bool) -> None:
        """The SDK accepted this attempt's HTTP response: tell telemetry and the pacer."""
        self.spans.response_received(response, stream)
        self.guard.answered(time.monotonic(), response.headers)

    def call_args(self, attempt: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.cast_to, self.options_for(attempt)), {
            "stream": self.stream,
            "stream_cls": self.stream_cls,
        }


def _bind(
    cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
) -> tuple[Any, FinalRequestOptions, bool, Any]:
    return cast_to, options, stream, stream_cls


def _async_request_wrapper(runtime: Runtime) -> Callable[..., Awaitable[Any]]:
    async def request(
        wrapped: Callable[..., Awaitable[Any]],
        instance: BaseClient[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            call = _Call(runtime, instance, args, kwargs, is_async=True)
        except Exception:  # our bug must not lose the call: the SDK's own path instead
            report_internal_error("request setup")
            return await wrapped(*args, **kwargs)

        async def send(attempt: int) -> Any:
            call_args, call_kwargs = call.call_args(attempt)
            token = _current_call.set(call if attempt else None)
            try:
                return await wrapped(*call_args, **call_kwargs)
            finally:
                _current_call.reset(token)

        return await run_async(call.state, send, runtime.async_sleep)

    return request


def _sync_request_wrapper(runtime: Runtime) -> Callable[..., Any]:
    def request(
        wrapped: Callable[..., Any],
        instance: BaseClient[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            call = _Call(runtime, instance, args, kwargs, is_async=False)
        except Exception:  # our bug must not lose the call: the SDK's own path instead
            report_internal_error("request setup")
            return wrapped(*args, **kwargs)

        def send(attempt: int) -> Any:
            call_args, call_kwargs = call.call_args(attempt)
            token = _current_call.set(call if attempt else None)
            try:
                return wrapped(*call_args, **call_kwargs)
            finally:
                _current_call.reset(token)

        return run_sync(call.state, send, runtime.sync_sleep)

    return request


def _build_request_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Keep the headers of the request the SDK built for an attempt: credentials resolved per
    request (an Azure AD token provider) are in no option, and newer SDKs strip them from the
    request an error carries, which is what an error body's echo must be checked against."""
    request = wrapped(*args, **kwargs)
    call = _current_call.get()
    if call is not None:
        call.built_headers[:] = (getattr(request, "headers", None),)
    return request


def _process_response_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _current_call.get()
    if call is not None:
        response = kwargs.get("response")
        if response is not None:
            call.response_received(response, bool(kwargs.get("stream")))
        if "retries_taken" in kwargs:  # the SDK counted only its own (none): the true count
            kwargs["retries_taken"] = call.state.attempts - 1
    return wrapped(*args, **kwargs)
