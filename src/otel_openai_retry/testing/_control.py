"""The control API (``/_fake/...``): the server's own calls, over HTTP, for a server in a process
of its own (``FakeServerProcess`` drives it; a benchmark in any language can too).

Every call of :class:`FakeOpenAIServer` that a test or a benchmark makes has its route here, so
that a server in another process is driven with the same calls as one in the test's own:

=======================  ======================================================================
``GET /_fake/stats``     ``{"requests": N, "by_status": {"200": .., "429": ..},
                         "pending_faults": N, "cpu_seconds": S}`` (``cpu_seconds``: the serving
                         process's CPU time so far, ``time.process_time()``)
``POST /_fake/script``   ``{"faults": [fault, ...], "path": str | null}``; a fault is the JSON
                         form of :class:`Fault`'s fields, headers as ``[name, value]`` pairs
``GET /_fake/requests``  ``{"requests": [record, ...]}``, the journal in arrival order, each
                         record :class:`RecordedRequest`'s fields (``raw_body`` in base64)
``POST /_fake/wait``     ``{"requests": N, "timeout": S}`` → ``{"arrived": bool}``, once ``N``
                         requests have arrived in all or ``S`` seconds have passed
``POST /_fake/conditions``  ``{"latency_s", "rate_limit": {"rate", "burst", "hints"} | null,
                         (``hints``: true, false or a mode: ms, seconds, headers, none)
                         "token_limit": {"per_minute", "bucket_seconds", "hints"} | null,
                         "quota_exhausted": bool, "sized_usage": bool,
                         "random_rejections": {"fraction", "seed", "retry_after_ms",
                         "limit"} | null,
                         "outage_s", "outage_status", "chunk_latency_s",
                         "chaos": {"seed", "rate_429", "rate_500", "rate_503", "drop",
                         "stall", "cut", "stall_s", "retry_after_ms"} | "seed=1,429=0.1"
                         | null}``, each optional
``POST /_fake/reset``    forget the script, the journal and the conditions
=======================  ======================================================================

A value the server refuses is answered 400 with ``{"error": message}``. Control requests are
neither journaled nor faulted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ._chaos import Chaos, parse_chaos
from ._limits import Hints, RateLimit, TokenLimit, hint_mode
from ._state import ServerState
from ._wire import fault_from_json, record_to_json

__all__ = ["CONTROL_PREFIX", "answer_control"]

CONTROL_PREFIX = "/_fake/"
"""Paths of the control API, outside the fake OpenAI API."""

_WAIT_POLL_S = 0.005
"""How often a waiting control call looks at the journal: polled on the server's loop, because a
blocking wait there would hold up the very requests it waits for."""


async def answer_control(state: ServerState, method: str, path: str, body: Any) -> web.Response:
    """Answer one control request, or 404 for a path the control API does not have."""
    name = path[len(CONTROL_PREFIX) :]
    try:
        if method == "GET" and name == "stats":
            return web.json_response(_stats(state))
        if method == "GET" and name == "requests":
            return web.json_response({"requests": [record_to_json(r) for r in state.requests]})
        if method == "POST" and name == "reset":
            state.reset()
            return _ok()
        if method == "POST" and isinstance(body, Mapping):
            if name == "script":
                faults = [fault_from_json(fault) for fault in body["faults"]]
                state.script(faults, body.get("path"))
                return _ok()
            if name == "wait":
                arrived = await _wait_for_requests(state, int(body["requests"]), body["timeout"])
                return web.json_response({"arrived": arrived})
            if name == "conditions":
                _set_conditions(state, body)
                return _ok()
    except (KeyError, TypeError, ValueError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    return web.json_response({"error": f"unknown control {method} {path}"}, status=404)


def _ok() -> web.Response:
    return web.json_response({"ok": True})


def _stats(state: ServerState) -> dict[str, Any]:
    counts = state.status_counts()
    return {
        "requests": sum(counts.values()),
        "by_status": counts,
        "pending_faults": state.pending_faults(),
        "cpu_seconds": time.process_time(),
    }


async def _wait_for_requests(state: ServerState, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + float(timeout)
    while state.request_count < n:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_WAIT_POLL_S)
    return True


def _set_conditions(state: ServerState, body: Mapping[str, Any]) -> None:
    conditions = state.conditions
    if "latency_s" in body:
        conditions.set_latency(float(body["latency_s"]))
    if "rate_limit" in body:
        spec = body["rate_limit"]
        conditions.set_rate_limit(
            None
            if spec is None
            else RateLimit(
                float(spec["rate"]), int(spec.get("burst", 10)), _hints(spec.get("hints", True))
            )
        )
    if "token_limit" in body:
        tokens = body["token_limit"]
        conditions.set_token_limit(
            None
            if tokens is None
            else TokenLimit(
                _integer(tokens["per_minute"]),
                float(tokens.get("bucket_seconds", 60.0)),
                _hints(tokens.get("hints", True)),
            )
        )
    if "quota_exhausted" in body:
        conditions.set_quota_exhausted(_flag(body["quota_exhausted"]))
    if "sized_usage" in body:
        conditions.set_sized_usage(_flag(body["sized_usage"]))
    if "random_rejections" in body:
        rejections = body["random_rejections"]
        if rejections is None:
            conditions.set_random_rejections(None)
        else:
            seed = rejections.get("seed")
            conditions.set_random_rejections(
                float(rejections["fraction"]),
                None if seed is None else int(seed),
                int(rejections.get("retry_after_ms", 100)),
                str(rejections.get("limit", "requests")),
            )
    if "chunk_latency_s" in body:
        conditions.set_chunk_latency(float(body["chunk_latency_s"]))
    if "chaos" in body:
        conditions.set_chaos(_chaos(body["chaos"]))
    if "outage_s" in body:
        conditions.start_outage(float(body["outage_s"]), int(body.get("outage_status", 503)))


def _chaos(value: Any) -> Chaos | None:
    """Chaos by its fields' names, in the command line's ``seed=1,429=0.1`` form, or null."""
    if value is None:
        return None
    return parse_chaos(value) if isinstance(value, str) else Chaos(**value)


def _integer(value: Any) -> int:
    """An integral number as an int; ``2.5`` or ``"2"`` is refused rather than rounded."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {value!r}")


def _hints(value: Any) -> bool | Hints:
    """A hint mode (``"ms"``, ``"seconds"``, ``"headers"``, ``"none"``) or a JSON boolean."""
    if isinstance(value, bool):
        return value
    return hint_mode(str(value)) if isinstance(value, str) else hint_mode(_flag(value))


def _flag(value: Any) -> bool:
    """A JSON boolean; ``"false"`` would be truthy, so only ``true``/``false`` are taken."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value
