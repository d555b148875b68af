"""Checks on traces in the JSON shape of Jaeger's ``/api/traces`` (what the Jaeger UI shows)."""

from __future__ import annotations

from typing import Any

from .span_tree import Expected

__all__ = ["check_jaeger_trace", "tags"]


def tags(span: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """A Jaeger span's tags as ``{key: (type, value)}``; the type is int64, float64, string…"""
    return {t["key"]: (t["type"], t["value"]) for t in span.get("tags") or []}


def check_jaeger_trace(trace: dict[str, Any], expected: Expected, *, service: str) -> None:
    """One logical span at the root, its attempts as CHILD_OF children, ints stored as int64."""
    spans = trace["spans"]
    where = f"Jaeger trace {trace['traceID']} ({expected.outcome})"
    roots = [s for s in spans if not s.get("references")]
    assert len(roots) == 1, (where, [s["operationName"] for s in roots])
    root = roots[0]
    assert trace["processes"][root["processID"]]["serviceName"] == service, where
    assert root["operationName"] == "chat gpt-4o-mini", where
    root_tags = tags(root)
    assert root_tags["span.kind"] == ("string", "client"), (where, root_tags)
    assert root_tags["gen_ai.operation.name"] == ("string", "chat"), (where, root_tags)
    assert root_tags["openai_retry.attempts"] == ("int64", len(expected.statuses)), (
        where,
        root_tags,
    )
    assert root_tags["openai_retry.total_sleep"][0] == "float64", (where, root_tags)
    assert root_tags["openai_retry.outcome"] == ("string", expected.outcome), (where, root_tags)
    assert root_tags["openai.api.type"] == ("string", "chat_completions"), (where, root_tags)
    if expected.error_type is not None:
        assert root_tags["error.type"] == ("string", expected.error_type), (where, root_tags)
        assert root_tags["otel.status_code"] == ("string", "ERROR"), (where, root_tags)

    children = sorted(
        (s for s in spans if s is not root), key=lambda s: (s["startTime"], s["operationName"])
    )
    assert [c["operationName"] for c in children] == [
        f"attempt {n}" for n in range(1, len(expected.statuses) + 1)
    ], where
    for number, (child, status) in enumerate(zip(children, expected.statuses, strict=True), 1):
        at = f"{where} / attempt {number}"
        assert child["references"] == [
            {"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": root["spanID"]}
        ], at
        child_tags = tags(child)
        assert child_tags["span.kind"] == ("string", "internal"), (at, child_tags)
        assert child_tags["openai_retry.attempt"] == ("int64", number), (at, child_tags)
        assert child_tags["http.response.status_code"] == ("int64", status), (at, child_tags)
        if number < len(expected.statuses):
            assert child_tags["openai_retry.sleep"][0] == "float64", (at, child_tags)
        if status >= 400:
            assert child_tags["error"] == ("bool", True), (at, child_tags)
