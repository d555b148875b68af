"""Companion mode: another instrumentation's inference span already covers the call.

The GenAI conventions (semantic-conventions-genai, "Handling existing inference spans") ask an
instrumentation that finds an inference span active for the call to make no second span and
record no second GenAI metric, and allow it to enrich the existing span. So, beneath a peer's
span, ours adds only what the peer cannot know: one span per attempt, the retry summary on the
peer's span while it still records, our own ``openai_retry.*`` metrics, and those GenAI
measurements the peer does not record itself (:attr:`Peer.records`), so each is recorded once.

Which peers are recognised is kept here, in one place: a context key whose value a peer sets for
the span of the inference it is making (:data:`PEER_CONTEXT_KEYS`, the conventions' way); for
peers that set none, the instrumentation scope of the span current when the SDK's ``request``
runs (:data:`PEER_SCOPES`); for a peer whose span is not current at all, its wrapper's frame on
the stack of ``request`` (:data:`FRAME_PEERS`, see ``_peer_frames``). A peer that suppresses
other instrumentations beneath its span (:attr:`Peer.suppresses`) is recognised before the
suppression is honoured: what it silences is what only we can tell it, and suppression the user
set it honours itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from ._peer_frames import langfuse_generation

__all__ = [
    "FRAME_PEERS",
    "GENAI_MEASUREMENTS",
    "PEER_CONTEXT_KEYS",
    "PEER_SCOPES",
    "SUPPRESSING_PEER_SCOPES",
    "Found",
    "Peer",
    "peer_span",
]

GENAI_MEASUREMENTS = frozenset({"duration", "usage", "ttfc"})
"""What ``Instruments.without`` can leave to a peer: the call's duration, its token usage, a
stream's time to first chunk."""


@dataclass(frozen=True, slots=True)
class Peer:
    active: Callable[[], bool]
    """Whether the peer is instrumented now: tells its span from others when sampling dropped it."""
    records: frozenset[str] = GENAI_MEASUREMENTS
    """The GenAI measurements it records itself for the call; ours record the others."""
    suppresses: bool = False
    """It suppresses every other instrumentation while its span is current."""


@dataclass(frozen=True, slots=True)
class Found:
    """A peer's span for the call being made, and what it records."""

    span: Span
    records: frozenset[str]


PEER_CONTEXT_KEYS = (
    "opentelemetry.genai.client.inference.context",
    "opentelemetry.genai.client.embedding.context",
    "opentelemetry.genai.client.fetch_response.context",
    "opentelemetry.genai.client.retrieval.context",
)
"""``opentelemetry-util-genai`` (the official OpenAI instrumentation, ``genai-openai``): one key
per kind of operation, set while its span for that operation is current. It records every GenAI
measurement."""


def _instrumentor_on(module_name: str) -> Callable[[], bool]:
    """Whether the ``OpenAIInstrumentor`` of ``module_name`` (if imported) is instrumented now."""

    def instrumented() -> bool:
        module = sys.modules.get(module_name)
        instrumentor = getattr(module, "OpenAIInstrumentor", None) if module else None
        instance = getattr(instrumentor, "_instance", None)  # a BaseInstrumentor is a singleton
        return getattr(instance, "is_instrumented_by_opentelemetry", False) is True

    return instrumented


def _logfire_on() -> bool:
    """``logfire.instrument_openai()`` marks each client class it instruments."""
    openai = sys.modules.get("openai")
    classes = (getattr(openai, "OpenAI", None), getattr(openai, "AsyncOpenAI", None))
    return any(getattr(cls, "_is_instrumented_by_logfire", False) is True for cls in classes)


def _any_on(*checks: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: any(check() for check in checks)


_OPENAI_V2_ON = _instrumentor_on("opentelemetry.instrumentation.openai_v2")
_GENAI_OPENAI_ON = _instrumentor_on("opentelemetry.instrumentation.genai.openai")


def _pydantic_ai_on() -> bool:
    """``Agent.instrument_all()``; an agent instrumented on its own says so on itself only."""
    module = sys.modules.get("pydantic_ai.agent")
    agent = getattr(module, "Agent", None) if module else None
    return getattr(agent, "_instrument_default", False) not in (False, None)


def _always() -> bool:
    return True


PEER_SCOPES: dict[str, Peer] = {
    # The official openai-v2 (2.4b0): its own scope for some operations, and for chat the scope
    # of the util-genai handler it calls (releases of util-genai before the context keys, which
    # genai-openai sets besides); it records the duration and the token usage.
    "opentelemetry.instrumentation.openai_v2": Peer(
        _OPENAI_V2_ON, records=frozenset({"duration", "usage"})
    ),
    "opentelemetry.util.genai.handler": Peer(
        _any_on(_OPENAI_V2_ON, _GENAI_OPENAI_ON), records=frozenset({"duration", "usage"})
    ),
    # OpenLLMetry (Traceloop's opentelemetry-instrumentation-openai)
    "opentelemetry.instrumentation.openai.v1": Peer(
        _instrumentor_on("opentelemetry.instrumentation.openai")
    ),
    # OpenInference (Arize's openinference-instrumentation-openai): it records no metrics
    "openinference.instrumentation.openai": Peer(
        _instrumentor_on("openinference.instrumentation.openai"), records=frozenset()
    ),
    # Logfire (logfire.instrument_openai())
    "logfire.openai": Peer(_logfire_on, suppresses=True),
    # pydantic-ai's instrumentation (Agent.instrument_all(), agent.instrument = ...): its
    # `chat <model>` span is current while the SDK runs; it records token usage and a stream's
    # time to first chunk, not the call's duration.
    "pydantic-ai": Peer(_pydantic_ai_on, records=frozenset({"usage", "ttfc"})),
}
"""Instrumentation scope of a peer whose span is current while the SDK runs (it sets no key)."""

FRAME_PEERS: dict[str, tuple[Callable[[], Span | None], Peer]] = {
    # Langfuse (`from langfuse.openai import OpenAI`): its generation span is started, not made
    # current, by its wrapper of the resource methods; it records no metrics.
    "langfuse.openai": (langfuse_generation, Peer(_always, records=frozenset())),
}
"""Module of a peer whose span is not current while the SDK runs → how to find that span for the
call being made (on the stack of ``request``), and the peer."""

SUPPRESSING_PEER_SCOPES = frozenset(name for name, peer in PEER_SCOPES.items() if peer.suppresses)
"""Peers that suppress every other instrumentation while their span is current (Logfire's
default ``suppress_other_instrumentation=True``). Each skips its span when the user suppressed
instrumentation, so its span being current means the suppression is its own."""


def peer_span(genai: bool, suppressed: bool = False) -> Found | None:
    """A recognised peer's span for the call being made, if any; ``genai``: the call has GenAI
    meaning (the peers recognised by scope or frame instrument only those); ``suppressed``:
    instrumentation is suppressed now, so only a peer that suppresses others can be current."""
    span = trace.get_current_span()
    valid = span.get_span_context().is_valid
    if valid and not suppressed:
        for key in PEER_CONTEXT_KEYS:
            if otel_context.get_value(key) is not None:
                return Found(span, GENAI_MEASUREMENTS)
    if not genai:
        return None
    if valid:
        found = _current_peer(span, suppressed)
        if found is not None:
            return found
    if suppressed:
        return None
    for module, (find, peer) in FRAME_PEERS.items():
        if module in sys.modules:
            generation = find()
            if generation is not None:
                return Found(generation, peer.records)
    return None


def _current_peer(span: Span, suppressed: bool) -> Found | None:
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None:
        peer = PEER_SCOPES.get(getattr(scope, "name", None) or "")
        if peer is None or (suppressed and not peer.suppresses):
            return None
        return Found(span, peer.records)
    # A span sampling dropped says nothing of who made it; a peer that is instrumented then
    # still records its GenAI metrics, so ours must not record them a second time.
    if span.is_recording():
        return None
    for peer in PEER_SCOPES.values():
        if (peer.suppresses or not suppressed) and peer.active():
            return Found(span, peer.records)
    return None
