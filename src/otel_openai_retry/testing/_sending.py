"""How an answer goes out on the wire, shaped by its fault: paced, stalled, cut, or spoiled.

Apart from the request handling (``_app``) because this is where the faults that act on the body
live, and each of them acts the same on every endpoint's answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from typing import Any

from aiohttp import web

from . import _bodies
from ._faults import Fault

__all__ = ["BAD_FRAME", "INVALID_JSON", "Sender"]

BAD_FRAME = b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n'
"""An event whose data is cut short: not JSON, as a proxy that splits a frame might send it."""

INVALID_JSON = b"<html><body>502 Bad Gateway</body></html>"
"""What a 200 that is not JSON most often is: a proxy's page."""


class Sender:
    """Writes answers; ``stopping`` cuts every wait short when the server stops."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    async def stopped_within(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (``None``: until the server stops); whether the server stopped."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return False
        return True

    @staticmethod
    def headers(fault: Fault, request_id: str, started: float) -> dict[str, str]:
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
    def drop(
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

    async def send_json(
        self,
        request: web.Request,
        fault: Fault,
        headers: dict[str, str],
        payload: Any,
        *,
        status: int | None = None,
    ) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        status = status if status is not None else fault.status_code
        if fault.bad_body == "invalid":
            data = INVALID_JSON
        elif fault.bad_body == "truncated":
            data = data[: len(data) // 2]
        if fault.break_after is None and fault.stall_after is None:
            return web.Response(
                body=data, status=status, headers=headers, content_type="application/json"
            )
        # A non-streamed answer has no events to count: announce the whole body, send half.
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "application/json"
        response.content_length = len(data)
        await response.prepare(request)
        try:
            await response.write(data[: len(data) // 2])
            if fault.break_after is not None:
                return self.drop(request, response)
            if await self.stopped_within(fault.stall_s):
                return self.drop(request, response)
            await response.write(data[len(data) // 2 :])
            await response.write_eof()
        except ConnectionError:  # the client hung up: see send_events
            pass
        return response

    async def send_events(
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
        try:
            # One step past the last event: a stall or a bad frame placed there still happens.
            for sent, event in enumerate([*events, None]):
                if await self._before_event(response, fault, sent, pace=event is not None):
                    return self.drop(request, response)
                if event is not None:
                    await response.write(event.encode())
            if fault.break_after is not None:
                return self.drop(request, response)
            await response.write_eof()
        except ConnectionError:
            # The client hung up (a bad frame or a stall it gave up on): aiohttp before 3.11
            # raises where later ones stay quiet, and its log of it would be noise in a user's
            # test run; aiohttp's own finishing of the response takes the closed connection so.
            pass
        return response

    async def _before_event(
        self, response: web.StreamResponse, fault: Fault, sent: int, *, pace: bool
    ) -> bool:
        """Pace, stall or spoil the stream before its next event; whether the server stopped."""
        if pace and sent and fault.chunk_delay_s and await self.stopped_within(fault.chunk_delay_s):
            return True
        if sent == fault.stall_after and await self.stopped_within(fault.stall_s):
            return True
        if sent == fault.bad_frame_after:
            await response.write(BAD_FRAME)
        return False
