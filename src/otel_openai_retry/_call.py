"""One intercepted ``request``: what every attempt of a logical call shares, for both drivers."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from openai._base_client import BaseClient
from openai._models import FinalRequestOptions
from openai._types import NotGiven
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from ._attempt_options import cap_timeout, max_attempts, options_with, sent_header_values
from ._attributes import describe_request
from ._call_state import PACING, CallState
from ._call_tokens import used_tokens
from ._companion import peer_span
from ._endpoints import EndpointGuard
from ._internal import report_internal_error
from ._observers import observers_for_call
from ._replay import capture_body
from ._runtime import Runtime
from ._sendable import headers_sendable
from ._servers import server_of
from ._telemetry import CallTelemetry
from ._token_estimate import estimate_tokens

__all__ = ["Call", "options_of"]


class Call:
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
        # A peer that silences other instrumentations beneath its span (Logfire) would silence
        # the attempts and retry summary only we can give; suppression it did not set still wins.
        peer = peer_span(info.operation is not None, suppressed=not enabled)
        telemetry = runtime.telemetry if enabled or peer is not None else runtime.quiet
        if peer is not None:  # beneath its span: the GenAI measurements it records are its own
            telemetry = replace(telemetry, instruments=telemetry.instruments.without(peer.records))
        sent = functools.partial(sent_header_values, client, options, self.built_headers)
        self.spans = CallTelemetry(
            telemetry, info, options.json_data, sent, None if peer is None else peer.span
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

    def used_later(self, charge: Callable[[int], None]) -> None:
        self.spans.charge_usage(charge)

    def options_for(self, attempt: int) -> FinalRequestOptions:
        """The SDK's retries off, the true retry count on the wire (unless the caller set or
        removed that header for the request: the SDK leaves it as the caller chose, and so do
        we), the deadline respected."""
        options = self.options
        if attempt == 0:  # not an attempt: the SDK, unobserved, raises what it raises
            return options_with(options, {"max_retries": 0})
        update: dict[str, Any] = {"max_retries": 0}
        headers: Mapping[str, Any] = (
            {} if isinstance(options.headers, NotGiven) else options.headers
        )
        if not headers:
            update["headers"] = {_RETRY_COUNT: str(attempt - 1)}
        elif not any(name.lower() == _RETRY_COUNT for name in headers):
            update["headers"] = {**headers, _RETRY_COUNT: str(attempt - 1)}
        if self.deadline is not None:
            configured = (
                self.client.timeout if isinstance(options.timeout, NotGiven) else options.timeout
            )
            update["timeout"] = cap_timeout(configured, self.deadline - time.monotonic())
        return options_with(options, update)

    def response_received(self, response: Any, stream: bool) -> None:
        """The SDK accepted this attempt's HTTP response: tell telemetry and the pacer."""
        self.spans.response_received(response, stream)
        try:
            self.guard.answered(time.monotonic(), response.headers)
        except Exception:  # pacing only holds calls back: its bug must not reach this one
            report_internal_error(PACING)


_RETRY_COUNT = "x-stainless-retry-count"


def _bind(
    cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
) -> tuple[Any, FinalRequestOptions, bool, Any]:
    return cast_to, options, stream, stream_cls


def options_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    return args[1] if len(args) > 1 else kwargs.get("options")
