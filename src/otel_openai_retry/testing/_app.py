"""The aiohttp application: every request is journaled, gets its fault, then its answer.

One catch-all route rather than one route per endpoint, because a fault must be able to hit any
request, an unknown path included: aiohttp's router would answer 404 before any fault could
apply, and the request would not be journaled.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import _bodies
from ._azure import azure_refusal, route
from ._control import CONTROL_PREFIX, answer_control
from ._sending import Sender
from ._state import ServerState

__all__ = ["FakeOpenAIApp"]

_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Generous, so that benchmarks with large prompts or batches are not refused."""

_Body = Mapping[str, Any]


@dataclass(frozen=True)
class _How:
    sized: bool
    """Usage follows the request's size."""
    reply: str | None
    """The assistant's text, scripted (``Fault.replying``), instead of the answer it would give."""


@dataclass(frozen=True)
class _Endpoint:
    """``answer`` and ``stream`` take the body, and how to answer it."""

    answer: Callable[[_Body, _How], _bodies.JSON]
    stream: Callable[[_Body, _How], list[_bodies.SSEEvent]] | None = None
    multipart: bool = False
    """The body is ``multipart/form-data``; ``answer`` gets its parts by field name."""


def _sized(
    build: Callable[..., _bodies.JSON | list[_bodies.SSEEvent]],
) -> Callable[[_Body, _How], Any]:
    return lambda body, how: build(body, sized=how.sized)


def _replying(
    build: Callable[..., _bodies.JSON | list[_bodies.SSEEvent]],
) -> Callable[[_Body, _How], Any]:
    return lambda body, how: build(body, sized=how.sized, reply=how.reply)


def _unsized(build: Callable[[_Body], _bodies.JSON]) -> Callable[[_Body, _How], _bodies.JSON]:
    return lambda body, _: build(body)


_ENDPOINTS: dict[tuple[str, str], _Endpoint] = {
    ("POST", "/v1/chat/completions"): _Endpoint(
        _replying(_bodies.chat_completion), _replying(_bodies.chat_completion_events)
    ),
    ("POST", "/v1/completions"): _Endpoint(
        _sized(_bodies.completion), _sized(_bodies.completion_events)
    ),
    ("POST", "/v1/embeddings"): _Endpoint(_sized(_bodies.embeddings)),
    ("POST", "/v1/responses"): _Endpoint(
        _replying(_bodies.response), _replying(_bodies.response_events)
    ),
    ("GET", "/v1/models"): _Endpoint(lambda _, __: _bodies.model_list()),
    ("POST", "/v1/files"): _Endpoint(_unsized(_bodies.file_object), multipart=True),
}
_MODEL_PREFIX = "/v1/models/"


def _endpoint(method: str, path: str) -> _Endpoint | None:
    if (method, path) in _ENDPOINTS:
        return _ENDPOINTS[method, path]
    if method == "GET" and path.startswith(_MODEL_PREFIX) and len(path) > len(_MODEL_PREFIX):
        model_id = path[len(_MODEL_PREFIX) :]
        return _Endpoint(lambda _, __: _bodies.model(model_id))
    return None


def _lowered_headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class FakeOpenAIApp:
    """Request handling, bound to one :class:`ServerState` and to the loop it runs on."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._sender = Sender()

    def build(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def release_waiters(self) -> None:
        """Cut short every delayed handler: a stopping server must not wait out a 60 s delay."""
        self._sender.stopping.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        body = _parse_json(raw)
        if request.path.startswith(CONTROL_PREFIX):
            return await answer_control(self._state, request.method, request.path, body)
        request_id = f"req_{uuid.uuid4().hex}"
        where = route(request.path, dict(request.query))
        record = self._state.admit(
            request.method,
            request.path,
            _lowered_headers(request),
            body,
            request_id,
            raw,
            route=where,
            query=dict(request.query),
        )
        fault = record.fault
        send = self._sender

        if fault.delay_s and await send.stopped_within(fault.delay_s):
            return send.drop(request)
        if fault.drop_connection:
            return send.drop(request)

        headers = send.headers(fault, request_id, started)
        if fault.is_error:
            error = _bodies.error_body(
                fault.status_code, fault.message, code=fault.error_code, error_type=fault.error_type
            )
            return await send.send_json(request, fault, headers, error)

        refusal = azure_refusal(where)
        if refusal is not None:
            return await send.send_json(request, fault, headers, refusal[1], status=refusal[0])
        endpoint = _endpoint(request.method, where.api_path)
        if endpoint is None:
            # The real API's wording, so that a typo in a base URL reads the same here.
            message = f"Invalid URL ({request.method} {request.path})"
            error = _bodies.error_body(404, message)
            return await send.send_json(request, fault, headers, error, status=404)
        if endpoint.multipart:
            body = record.form
        elif request.method == "POST" and not isinstance(body, Mapping):
            message = "We could not parse the JSON body of your request."
            error = _bodies.error_body(400, message)
            return await send.send_json(request, fault, headers, error, status=400)
        request_body: _Body = body if isinstance(body, Mapping) else {}
        how = _How(self._state.conditions.sized_usage, fault.reply)
        try:
            wants_stream = endpoint.stream is not None and request_body.get("stream") is True
            if wants_stream and fault.bad_body is None:
                assert endpoint.stream is not None
                events = endpoint.stream(request_body, how)
                return await send.send_events(request, fault, headers, events)
            payload = endpoint.answer(request_body, how)
        except _bodies.InvalidRequestError as exc:
            error = _bodies.error_body(400, exc.message, exc.param)
            return await send.send_json(request, fault, headers, error, status=400)
        return await send.send_json(request, fault, headers, payload)
