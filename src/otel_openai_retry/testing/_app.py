"""The aiohttp application: every request is journaled, gets its fault, then its answer.

One catch-all route rather than one route per endpoint, because a fault must be able to hit any
request, an unknown path included: aiohttp's router would answer 404 before any fault could
apply, and the request would not be journaled.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import _bodies
from ._control import CONTROL_PREFIX, answer_control
from ._faults import Fault
from ._state import ServerState

__all__ = ["FakeOpenAIApp"]

_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Generous, so that benchmarks with large prompts or batches are not refused."""

_Body = Mapping[str, Any]


@dataclass(frozen=True)
class _Endpoint:
    answer: Callable[[_Body], _bodies.JSON]
    stream: Callable[[_Body], list[_bodies.SSEEvent]] | None = None
    multipart: bool = False
    """The body is ``multipart/form-data``; ``answer`` gets its parts by field name."""


_ENDPOINTS: dict[tuple[str, str], _Endpoint] = {
    ("POST", "/v1/chat/completions"): _Endpoint(
        _bodies.chat_completion, _bodies.chat_completion_events
    ),
    ("POST", "/v1/completions"): _Endpoint(_bodies.completion, _bodies.completion_events),
    ("POST", "/v1/embeddings"): _Endpoint(_bodies.embeddings),
    ("POST", "/v1/responses"): _Endpoint(_bodies.response, _bodies.response_events),
    ("GET", "/v1/models"): _Endpoint(lambda _: _bodies.model_list()),
    ("POST", "/v1/files"): _Endpoint(_bodies.file_object, multipart=True),
}
_MODEL_PREFIX = "/v1/models/"


def _endpoint(method: str, path: str) -> _Endpoint | None:
    if (method, path) in _ENDPOINTS:
        return _ENDPOINTS[method, path]
    if method == "GET" and path.startswith(_MODEL_PREFIX) and len(path) > len(_MODEL_PREFIX):
        model_id = path[len(_MODEL_PREFIX) :]
        return _Endpoint(lambda _: _bodies.model(model_id))
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
        self._stopping = asyncio.Event()

    def build(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def release_waiters(self) -> None:
        """Cut short every delayed handler: a stopping server must not wait out a 60 s delay."""
        self._stopping.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        body = _parse_json(raw)
        if request.path.startswith(CONTROL_PREFIX):
            return await answer_control(self._state, request.method, request.path, body)
        request_id = f"req_{uuid.uuid4().hex}"
        record = self._state.admit(
            request.method, request.path, _lowered_headers(request), body, request_id, raw
        )
        fault = record.fault

        if fault.delay_s and await self._stopped_within(fault.delay_s):
            return self._drop(request)
        if fault.drop_connection:
            return self._drop(request)

        headers = self._headers(fault, request_id, started)
        if fault.is_error:
            return await self._send_json(
                request,
                fault,
                headers,
                _bodies.error_body(
                    fault.status_code, fault.message, code=fault.error_code, kind=fault.error_type
                ),
            )

        endpoint = _endpoint(request.method, request.path)
        if endpoint is None:
            # The real API's wording, so that a typo in a base URL reads the same here.
            message = f"Invalid URL ({request.method} {request.path})"
            return await self._send_json(
                request, fault, headers, _bodies.error_body(404, message), status=404
            )
        if endpoint.multipart:
            body = record.form
        elif request.method == "POST" and not isinstance(body, Mapping):
            message = "We could not parse the JSON body of your request."
            return await self._send_json(
                request, fault, headers, _bodies.error_body(400, message), status=400
            )
        request_body: _Body = body if isinstance(body, Mapping) else {}
        try:
            if endpoint.stream is not None and request_body.get("stream") is True:
                return await self._send_events(
                    request, fault, headers, endpoint.stream(request_body)
                )
            payload = endpoint.answer(request_body)
        except _bodies.InvalidRequestError as exc:
            error = _bodies.error_body(400, exc.message, exc.param)
            return await self._send_json(request, fault, headers, error, status=400)
        return await self._send_json(request, fault, headers, payload)

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return False
        return True

    @staticmethod
    def _headers(fault: Fault, request_id: str, started: float) -> dict[str, str]:
        headers = {
            "x-request-id": request_id,
            "openai-version": "2020-10-01",
            "openai-processing-ms": str(round((time.monotonic() - started) * 1000)),
        }
        headers.update(fault.headers)
        if fault.retry_after_date_in is not None:
            # Computed now, not when scripted: the hint is relative to when the client reads it.
            headers["retry-after"] = email.utils.formatdate(
                time.time() + fault.retry_after_date_in, usegmt=True
            )
        return headers

    @staticmethod
    def _drop(
        request: web.Request, response: web.StreamResponse | None = None
    ) -> web.StreamResponse:
        """Close the connection after whatever was written so far (a FIN, not a reset).

        Not a reset, so that the bytes already sent are delivered before the end of the stream:
        a stream broken after three events must show the caller those three events. aiohttp's
        attempt to finish the returned response lands on the closed transport, which it takes as
        the client having gone away, and it moves on without logging an error.
        """
        transport = request.transport
        if transport is not None:
            transport.close()
        return response if response is not None else web.Response()

    async def _send_json(
        self,
        request: web.Request,
        fault: Fault,
        headers: dict[str, str],
        payload: _bodies.JSON,
        *,
        status: int | None = None,
    ) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        status = status if status is not None else fault.status_code
        if fault.break_after is None:
            return web.Response(
                body=data, status=status, headers=headers, content_type="application/json"
            )
        # A non-streamed answer has no events to count: announce the whole body, send half.
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "application/json"
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return self._drop(request, response)

    async def _send_events(
        self,
        request: web.Request,
        fault: Fault,
        headers: dict[str, str],
        events: list[_bodies.SSEEvent],
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=fault.status_code, headers=headers)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["cache-control"] = "no-cache"
        await response.prepare(request)
        if fault.break_after is not None:
            # The terminator is not an event the caller receives, so it is never counted and
            # never sent: a broken stream must not look finished.
            events = [event for event in events if event is not _bodies.DONE][: fault.break_after]
        for event in events:
            await response.write(event.encode())
        if fault.break_after is not None:
            return self._drop(request, response)
        await response.write_eof()
        return response
