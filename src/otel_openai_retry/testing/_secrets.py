"""The verdict on secrets: no credential the client sent, nor any the test names, appears in the
telemetry the library made: span names, attributes, events, links, statuses, metric attributes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from opentelemetry.sdk.trace import ReadableSpan

from ._checks import Evidence
from ._state import RecordedRequest
from ._verdict import Verdict

__all__ = ["no_secret_in_telemetry", "secrets_sent"]


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (tuple, list)):
        return [item for item in value if isinstance(item, str)]
    return []


def _places(span: ReadableSpan) -> Iterable[tuple[str, object]]:
    yield "name", span.name
    yield "status", span.status.description
    for key, value in (span.attributes or {}).items():
        yield f"attribute {key}", value
    for event in span.events:
        yield f"event {event.name!r}", event.name
        for key, value in (event.attributes or {}).items():
            yield f"event {event.name!r} attribute {key}", value
    for link in span.links:
        for key, value in (link.attributes or {}).items():
            yield f"link attribute {key}", value


def _masked(secret: str) -> str:
    return secret[:3] + "…" if len(secret) > 6 else "…"


def secrets_sent(requests: Iterable[RecordedRequest]) -> set[str]:
    """The credentials the client sent: Authorization (whole, and its token) and api-key."""
    found: set[str] = set()
    for request in requests:
        for name in ("authorization", "api-key"):
            value = request.headers.get(name)
            if value:
                found.add(value)
                found.add(value.split(" ", 1)[-1])
    return found


def no_secret_in_telemetry(ev: Evidence, secrets: Iterable[str]) -> Verdict:
    """None of ``secrets`` (and no credential the client sent) appears in any span name,
    attribute, event, link or status of the test, nor in any metric attribute."""
    wanted = {s for s in (*secrets, *secrets_sent(ev.requests)) if s and s.strip()}
    findings: list[str] = []
    for span in ev.spans:
        for place, value in _places(span):
            for text in _texts(value):
                findings.extend(
                    f"span {span.name!r}, {place}: holds the secret {_masked(secret)}"
                    for secret in wanted
                    if secret in text
                )
    leaked: Counter[tuple[str, str]] = Counter()
    for name, point in ev.metrics:
        for value in (getattr(point, "attributes", None) or {}).values():
            for text in _texts(value):
                leaked.update((name, secret) for secret in wanted if secret in text)
    findings.extend(
        f"metric {name}: an attribute holds the secret {_masked(secret)}" for name, secret in leaked
    )
    notes = [] if wanted else ["no credential was sent and none was given"]
    return Verdict.of("no secret in any span", findings, notes)
