"""The fake server in a process of its own, for load tests that measure time.

In the test process, the fake server's thread shares the GIL with the client: at 200 concurrent
calls, the server's work shows up as tens of milliseconds of delay in the client's event loop,
which is noise in any timing the test wants to check. In a process of its own it runs on the
other core. It is driven through a pipe with the same calls as ``FakeOpenAIServer``:
``script(...)``, ``requests``, ``wait_for_requests(...)``; the journal comes back as
:class:`RecordedRequest` values (``received_at`` is ``time.monotonic()``, which on Linux is one
clock for every process, so it compares with the test's own readings).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from multiprocessing.connection import Connection
from types import MappingProxyType, TracebackType
from typing import Any

from otel_openai_retry.testing import FakeOpenAIServer, Fault, RecordedRequest

__all__ = ["RemoteFakeServer"]

_START_TIMEOUT_S = 30.0
_CALL_TIMEOUT_S = 60.0


def _serve(conn: Connection) -> None:  # pragma: no cover - runs in the child process
    with FakeOpenAIServer() as server:
        conn.send(server.base_url)
        while True:
            command, payload = conn.recv()
            if command == "script":
                server.script(*payload)
                conn.send(None)
            elif command == "requests":
                conn.send(
                    [
                        {
                            field.name: getattr(record, field.name)
                            for field in dataclasses.fields(record)
                        }
                        | {"headers": dict(record.headers)}
                        for record in server.requests
                    ]
                )
            elif command == "wait":
                conn.send(server.wait_for_requests(*payload))
            elif command == "reset":
                server.reset()
                conn.send(None)
            else:
                conn.send(None)
                return


class RemoteFakeServer:
    """A :class:`FakeOpenAIServer` in a child process (``spawn``: no inherited threads)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child,), name="RemoteFakeServer", daemon=True
        )
        self.base_url = ""

    def __enter__(self) -> RemoteFakeServer:
        self._process.start()
        if not self._conn.poll(_START_TIMEOUT_S):
            self._process.kill()
            raise RuntimeError("the fake server process did not start")
        self.base_url = self._conn.recv()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._call("stop", None)
        finally:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._conn.close()

    def _call(self, command: str, payload: Any) -> Any:
        self._conn.send((command, payload))
        if not self._conn.poll(_CALL_TIMEOUT_S):
            raise RuntimeError(f"the fake server process did not answer {command!r}")
        return self._conn.recv()

    def script(self, *faults: Fault) -> None:
        self._call("script", faults)

    def reset(self) -> None:
        self._call("reset", None)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        return bool(self._call("wait", (n, timeout)))

    @property
    def requests(self) -> list[RecordedRequest]:
        return [
            RecordedRequest(**(fields | {"headers": MappingProxyType(fields["headers"])}))
            for fields in self._call("requests", None)
        ]

    @property
    def request_count(self) -> int:
        return len(self._call("requests", None))
