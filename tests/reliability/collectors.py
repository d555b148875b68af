"""Stand-ins for an OpenTelemetry Collector that is down, hung, or up — all on loopback.

- :func:`closed_port`: a port nothing listens on (connection refused at once);
- :class:`Blackhole`: accepts TCP connections and never reads or answers (a hung collector, or a
  firewall that swallows packets after the handshake): every export waits for its timeout;
- :class:`FakeCollector`: answers every OTLP/HTTP export with ``200`` and an empty (valid)
  protobuf response, counting the requests; the "collector up" baseline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["Blackhole", "FakeCollector", "closed_port"]


def closed_port() -> int:
    """A loopback port that was free a moment ago and that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Blackhole:
    """Listens on loopback, accepts every connection, and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._accepted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)

    @property
    def connections(self) -> int:
        """Connections accepted so far (and held open until exit)."""
        with self._lock:
            return self._accepted

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            with self._lock:
                self._held.append(conn)
                self._accepted += 1

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # shutdown() wakes the accept() blocked in the thread; close() alone may not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for conn in self._held:
                conn.close()
            self._held.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CollectorServer

    def do_POST(self) -> None:  # the OTLP/HTTP exporters only POST
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        with self.server.lock:
            self.server.exports[self.path] = self.server.exports.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


class _CollectorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.exports: dict[str, int] = {}


class FakeCollector:
    """An OTLP/HTTP receiver that accepts everything: ``endpoint`` is its base URL."""

    def __init__(self) -> None:
        self._server = _CollectorServer()
        self.port: int = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def exports(self) -> dict[str, int]:
        with self._server.lock:
            return dict(self._server.exports)

    def __enter__(self) -> FakeCollector:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
