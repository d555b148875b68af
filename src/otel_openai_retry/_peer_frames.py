"""A peer's inference span that is not the current span, found on the stack of ``request``.

Langfuse's OpenAI integration (``langfuse.openai``) wraps the resource methods (``create``,
``parse``) and starts its generation span without making it current, then calls the SDK: while
the SDK's ``request`` runs, nothing in the OpenTelemetry context says a peer is covering the call,
and spans made there would start a trace of their own. Its wrapper's frame is still on the stack
(an awaited coroutine's frame too), holding the generation it started; that generation's span is
the call's inference span. The walk runs only while ``langfuse.openai`` is imported, and stops
after a bounded number of frames.
"""

from __future__ import annotations

import sys
from types import FrameType

from opentelemetry.trace import Span

__all__ = ["langfuse_generation"]

_LANGFUSE_MODULE = "langfuse.openai"
_LANGFUSE_WRAPPERS = frozenset({"_wrap", "_wrap_async"})
_MAX_DEPTH = 64
"""Frames between Langfuse's wrapper and ``request``: the SDK's few, a few per wrapper stacked
between them; a call deeper than this is taken as not Langfuse's."""


def langfuse_generation() -> Span | None:
    """The span of the Langfuse generation started for the call being made, if any."""
    frame: FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None and depth < _MAX_DEPTH:
        code = frame.f_code
        if code.co_name in _LANGFUSE_WRAPPERS and frame.f_globals.get("__name__") == (
            _LANGFUSE_MODULE
        ):
            generation = frame.f_locals.get("generation")
            span = getattr(generation, "_otel_span", None)
            return span if isinstance(span, Span) else None
        frame = frame.f_back
        depth += 1
    return None
