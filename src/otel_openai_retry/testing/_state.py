"""The state shared by the test's thread and the server's thread: the script and the journal.

Both live behind one lock because they change together: the fault a request gets and its place in
the journal are decided in the same step, so arrival order and script order can never disagree,
however many requests arrive at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._azure import Route
from ._bodies.estimate import request_tokens
from ._conditions import Conditions
from ._faults import Fault
from ._form import FormPart, parse_form
from ._header_faults import FAULT_HEADER, FAULT_KEY_HEADER, HeaderFaults

__all__ = ["RecordedRequest", "ServerState", "normalize_path"]

API_PREFIX = "/v1"


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request as the server received it, with the fault that answered it.

    Attributes:
        method: ``"POST"``, ``"GET"``, ...
        path: The URL path without the query string, e.g. ``"/v1/chat/completions"``.
        headers: Every request header, names lower-cased (``authorization`` included: asserting
            which key a retry sent is a legitimate test). Repeated headers are joined with ``", "``.
        body: The JSON body, parsed; ``None`` when there is none or it is not JSON.
        retry_count: ``x-stainless-retry-count`` as an int: the SDK's own count of its retries,
            which tells whether a retry came from the SDK or from a loop around it. ``None`` when
            absent or not a number.
        fault: What the server did with the request.
        received_at: ``time.monotonic()`` at arrival, to measure backoff between attempts.
        request_id: The ``x-request-id`` the answer carried, to match a client-side record (a
            span, a log line) to this request; ``None`` when the connection was dropped instead.
        raw_body: The body's bytes exactly as received, whatever its content type: what proves
            that a retry re-sent the caller's whole body (see :attr:`form` for uploads).
        query: The query string's parameters (the last value of a repeated one).
        deployment: The Azure deployment the path names (``/openai/deployments/{deployment}/
            ...``); ``None`` on OpenAI's paths.
        api_version: The ``api-version`` query parameter Azure clients send; ``None`` without.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    retry_count: int | None
    fault: Fault
    received_at: float
    request_id: str | None = None
    raw_body: bytes = b""
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    deployment: str | None = None
    api_version: str | None = None

    @property
    def form(self) -> Mapping[str, FormPart]:
        """The parts of a ``multipart/form-data`` body by field name (``{}`` for other bodies),
        each part's bytes exact: ``record.form["file"].data`` is the uploaded file."""
        return MappingProxyType(parse_form(self.headers.get("content-type"), self.raw_body))

    def __repr__(self) -> str:
        # Headers and bodies drown a failed assertion; what was asked and what it got is what
        # a reader needs first. The fields are all still there to look at.
        return (
            f"RecordedRequest({self.method} {self.path}, retry_count={self.retry_count}, "
            f"fault={self.fault!r})"
        )


def normalize_path(path: str) -> str:
    """Accept the SDK's view of a path (``"/embeddings"``) as well as the server's (``/v1/...``).

    Without this, ``script(..., path="/embeddings")`` would be accepted and then silently never
    match, because every request the SDK makes arrives under the ``/v1`` base URL.
    """
    path = "/" + path.strip().strip("/")
    if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
        path = API_PREFIX + path
    return path


def parse_retry_count(value: str | None) -> int | None:
    """The SDK sends a decimal string; anything else is recorded as unknown rather than raising."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _model_of(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, Mapping) else None
    return model if isinstance(model, str) and model else None


class ServerState:
    """Fault queues and the request journal, safe to use from any thread."""

    def __init__(self, on_request: Callable[[RecordedRequest], None] | None = None) -> None:
        self.conditions = Conditions()
        self._changed = threading.Condition()
        self._global: deque[Fault] = deque()
        self._by_path: dict[str, deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._header_faults = HeaderFaults()
        self._on_request = on_request

    def script(self, faults: Iterable[Fault], path: str | None) -> None:
        faults = list(faults)
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"script() takes Fault values, got {fault!r}")
        with self._changed:
            if path is None:
                self._global.extend(faults)
            else:
                self._by_path.setdefault(normalize_path(path), deque()).extend(faults)

    def admit(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Any,
        request_id: str,
        raw_body: bytes = b"",
        *,
        route: Route | None = None,
        query: Mapping[str, str] | None = None,
    ) -> RecordedRequest:
        """Decide the fault for a request that just arrived and journal it, in one step.

        The fault the request's ``x-fake-openai-fault`` header asks for comes first (a client
        that names its fault means it), then the queue of the path it is answered on (an Azure
        path's ``/v1`` twin), then the global queue, then the conditions.
        """
        route = route or Route(path)
        with self._changed:
            queue = self._by_path.get(route.api_path)
            asked = headers.get(FAULT_HEADER)
            if asked is not None:
                fault = self._header_faults.next(asked, headers.get(FAULT_KEY_HEADER, ""))
            elif queue:
                fault = queue.popleft()
            elif self._global:
                fault = self._global.popleft()
            else:
                fault = self.conditions.decide(
                    time.monotonic(), _model_of(body), request_tokens(body)
                )
            record = RecordedRequest(
                method=method,
                path=path,
                headers=MappingProxyType(dict(headers)),
                body=body,
                retry_count=parse_retry_count(headers.get("x-stainless-retry-count")),
                fault=fault,
                received_at=time.monotonic(),
                request_id=None if fault.drop_connection else request_id,
                raw_body=raw_body,
                query=MappingProxyType(dict(query or {})),
                deployment=route.deployment,
                api_version=route.api_version,
            )
            self._requests.append(record)
            self._changed.notify_all()
        if self._on_request is not None:
            # Outside the lock: a slow or re-entrant callback must not stall other requests.
            self._on_request(record)
        return record

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._changed:
            return len(self._requests)

    def pending_faults(self) -> int:
        with self._changed:
            return len(self._global) + sum(len(queue) for queue in self._by_path.values())

    def reset(self) -> None:
        with self._changed:
            self._global.clear()
            self._by_path.clear()
            self._requests.clear()
            self._header_faults.clear()
            self._changed.notify_all()
        self.conditions.clear()

    def status_counts(self) -> dict[str, int]:
        """How many requests got each answer: ``"429"``, ``"200"``, ``"drop"``, ..."""
        counts: dict[str, int] = {}
        with self._changed:
            for record in self._requests:
                fault = record.fault
                key = "drop" if fault.drop_connection else str(fault.status_code)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout=timeout)
