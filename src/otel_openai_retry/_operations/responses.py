"""The Responses API: one response with a ``status``, streamed as typed events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

from ._fields import (
    NUMERIC_PARAMS,
    ResponseFields,
    fields_of,
    read_common,
    read_usage,
    request_parameters,
)
from ._messages import JSON, dumps, message, parts

__all__ = [
    "ResponseEvents",
    "response_input_messages",
    "response_output_messages",
    "responses_request",
    "responses_response",
]

_ENDING_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def responses_request(body: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return request_parameters(body, NUMERIC_PARAMS)


def _finish_reason(status: object, incomplete_details: object) -> str | None:
    """``incomplete_details.reason`` if any, else ``stop`` for a completed response, else the
    status itself (``failed``, ``cancelled``, ...)."""
    reason = fields_of(incomplete_details).get("reason") if incomplete_details else None
    if isinstance(reason, str):
        return reason
    if status == "completed":
        return "stop"
    return status if isinstance(status, str) else None


def responses_response(result: object) -> ResponseFields:
    fields = fields_of(result)
    found = read_common(fields, ResponseFields())
    if fields.get("object") == "response":
        reason = _finish_reason(fields.get("status"), fields.get("incomplete_details"))
        if reason is not None:
            found.finish_reasons = (reason,)
    return found


def response_input_messages(body: Mapping[str, Any]) -> str | None:
    raw = body.get("input")
    if isinstance(raw, str):
        return dumps([message("user", raw)])
    if not isinstance(raw, Sequence):
        return None
    found: list[JSON] = [
        message(item["role"], item.get("content"))
        for item in raw
        if isinstance(item, Mapping) and "role" in item
    ]
    return dumps(found)


def response_output_messages(result: object) -> str | None:
    output_text = getattr(result, "output_text", None)
    if not isinstance(output_text, str):
        return None
    status = getattr(result, "status", None)
    return dumps(
        [
            {
                "role": "assistant",
                "parts": parts(output_text),
                "finish_reason": "stop" if status == "completed" else str(status),
            }
        ]
    )


class ResponseEvents:
    """A Responses stream's events, summarised as they pass: the response object that the
    lifecycle events carry, and the text deltas when content is captured."""

    __slots__ = ("_fields", "_texts")

    def __init__(self, capture_content: bool) -> None:
        self._fields = ResponseFields()
        self._texts: list[str] | None = [] if capture_content else None

    def add(self, event: object) -> None:
        kind = getattr(event, "type", None)
        response = getattr(event, "response", None)
        if response is not None:
            found = self._fields
            response_id = getattr(response, "id", None)
            if isinstance(response_id, str):
                found.response_id = response_id
            model = getattr(response, "model", None)
            if isinstance(model, str):
                found.model = model
            if kind in _ENDING_EVENTS:
                reason = _finish_reason(
                    getattr(response, "status", None),
                    getattr(response, "incomplete_details", None),
                )
                if reason is not None:
                    found.finish_reasons = (reason,)
                tier = getattr(response, "service_tier", None)
                if isinstance(tier, str):
                    found.service_tier = tier
                usage = getattr(response, "usage", None)
                if usage is not None:
                    read_usage(fields_of(usage), found)
        elif kind == "response.output_text.delta" and self._texts is not None:
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                self._texts.append(delta)

    def fields(self, cut: bool = False) -> ResponseFields:
        if cut and not self._fields.finish_reasons:
            self._fields.finish_reasons = ("error",)
        return self._fields

    def output_messages(self) -> str | None:
        reasons = self._fields.finish_reasons
        if self._texts is None or not (self._texts or reasons):
            return None
        return dumps(
            [
                {
                    "role": "assistant",
                    "parts": parts("".join(self._texts)),
                    "finish_reason": reasons[0] if reasons else "",
                }
            ]
        )
