"""The fake server in a process of its own, driven over its control API with the same calls as
:class:`FakeOpenAIServer`.

For runs that measure time or CPU. In the caller's process, the server's thread shares the GIL
with the client: at hundreds of concurrent calls its work shows up as tens of milliseconds of delay
in the client's event loop, and as CPU time in the client's ``time.process_time()``. In a process
of its own it runs on another core and its CPU time is counted apart (:meth:`cpu_seconds`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._chaos import Chaos, chaos_to_json
from ._child import end, error_of, first_line
from ._faults import Fault
from ._limits import Hints, hint_mode
from ._state import RecordedRequest
from ._wire import fault_to_json, record_from_json

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FakeServerProcess"]

_LISTENING = "listening on "
_CALL_TIMEOUT_S = 60.0

# Loopback only: a proxy from the environment (``HTTP_PROXY``) must never see control calls.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeServerProcess:
    """``python -m otel_openai_retry.testing`` in a child process, driven like the server itself.

    ::

        with FakeServerProcess() as server:
            server.script(Fault.rate_limit(retry_after_ms=50), Fault.server_error())
            client = OpenAI(api_key="sk-test", base_url=server.base_url)
            client.chat.completions.create(model="gpt-4o-mini", messages=[...])
            assert [r.fault.status_code for r in server.requests] == [429, 500, 200]
            print(server.cpu_seconds())  # what the server process has used so far

    The calls are those of :class:`FakeOpenAIServer` (script, journal, conditions), each one HTTP
    request to the child's control API (``/_fake/...``). The journal comes back as
    :class:`RecordedRequest` values; ``received_at`` is ``time.monotonic()`` in the child, one
    clock for every process of the machine, so it compares with the caller's own readings.

    Args:
        host: Interface the child binds; loopback by default.
        port: ``0`` lets the OS pick a free port.
        options: More command-line options for the child, as ``--help`` lists them, e.g.
            ``("--rate-limit", "50")``.
        log_requests: Let the child log each request on standard error (inherited from this
            process); otherwise it runs with ``--quiet``.
        startup_timeout: Seconds to wait for the child to accept connections.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        options: Sequence[str] = (),
        log_requests: bool = False,
        startup_timeout: float = 30.0,
    ) -> None:
        self._command = [
            sys.executable,
            "-m",
            "otel_openai_retry.testing",
            "--host",
            host,
            "--port",
            str(port),
            *([] if log_requests else ["--quiet"]),
            *options,
        ]
        self._host = host
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._base_url = ""
        self.returncode: int | None = None
        """The child's exit status once stopped (``0`` after a clean stop on POSIX)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child; returns once it accepts connections. A no-op when running."""
        if self._process is not None:
            return
        process = subprocess.Popen(
            self._command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        try:
            line = first_line(process, self._startup_timeout)
        except BaseException:  # an interrupt while waiting must not leave the child behind
            end(process)
            raise
        if not line.startswith(_LISTENING):
            end(process)
            raise RuntimeError(
                f"the fake server process did not start (exit code {process.returncode}): {line!r}"
            )
        self._process = process
        self._base_url = line[len(_LISTENING) :]
        self.returncode = None

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL if it lingers) and record its exit status."""
        process, self._process = self._process, None
        if process is not None:
            self.returncode = end(process)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it runs --------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def host(self) -> str:
        return self._host

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to ``OpenAI``/``AsyncOpenAI``: ``http://host:port/v1``."""
        self._running()
        return self._base_url

    @property
    def url(self) -> str:
        """``http://host:port``: what to pass as ``azure_endpoint`` to ``AzureOpenAI``."""
        return self.base_url.removesuffix("/v1")

    @property
    def port(self) -> int:
        port = urlsplit(self.base_url).port
        assert port is not None, self._base_url
        return port

    @property
    def pid(self) -> int:
        return self._running().pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the child has used so far, its start-up included."""
        return float(self._stats()["cpu_seconds"])

    # -- the calls of FakeOpenAIServer ----------------------------------------------------------

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """Queue faults for the next requests, as :meth:`FakeOpenAIServer.script` does."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"script() takes Fault values, got {fault!r}")
        self._call("script", {"faults": [fault_to_json(f) for f in faults], "path": path})

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        return [record_from_json(record) for record in self._call("requests")["requests"]]

    @property
    def request_count(self) -> int:
        return int(self._stats()["requests"])

    @property
    def pending_faults(self) -> int:
        return int(self._stats()["pending_faults"])

    def reset(self) -> None:
        """Forget the script, the journal and the conditions."""
        self._call("reset", {})

    def set_latency(self, seconds: float) -> None:
        self._call("conditions", {"latency_s": seconds})

    def set_rate_limit(
        self, rate: float | None, burst: int = 10, *, hints: bool | Hints = True
    ) -> None:
        spec = None if rate is None else {"rate": rate, "burst": burst, "hints": hint_mode(hints)}
        self._call("conditions", {"rate_limit": spec})

    def set_token_limit(
        self, per_minute: int | None, bucket_seconds: float = 60.0, *, hints: bool | Hints = True
    ) -> None:
        spec = (
            None
            if per_minute is None
            else {
                "per_minute": per_minute,
                "bucket_seconds": bucket_seconds,
                "hints": hint_mode(hints),
            }
        )
        self._call("conditions", {"token_limit": spec})

    def set_quota_exhausted(self, exhausted: bool = True) -> None:
        self._call("conditions", {"quota_exhausted": exhausted})

    def set_sized_usage(self, sized: bool = True) -> None:
        self._call("conditions", {"sized_usage": sized})

    def set_random_rejections(
        self,
        fraction: float | None,
        seed: int | None = None,
        *,
        retry_after_ms: int = 100,
        limit: str = "requests",
    ) -> None:
        spec = (
            None
            if fraction is None
            else {"fraction": fraction, "seed": seed, "retry_after_ms": retry_after_ms,
                  "limit": limit}
        )  # fmt: skip
        self._call("conditions", {"random_rejections": spec})

    def set_chunk_latency(self, seconds: float) -> None:
        self._call("conditions", {"chunk_latency_s": seconds})

    def set_chaos(self, chaos: Chaos | None) -> None:
        self._call("conditions", {"chaos": None if chaos is None else chaos_to_json(chaos)})

    def start_outage(self, seconds: float, status: int = 503) -> None:
        self._call("conditions", {"outage_s": seconds, "outage_status": status})

    def status_counts(self) -> dict[str, int]:
        """Requests received by the answer they got: ``{"200": 950, "429": 61, "drop": 2}``."""
        counts: dict[str, int] = self._stats()["by_status"]
        return counts

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` requests have arrived in all; ``False`` if ``timeout`` ran out."""
        answer = self._call("wait", {"requests": n, "timeout": timeout}, timeout + _CALL_TIMEOUT_S)
        return bool(answer["arrived"])

    # -- the control API ------------------------------------------------------------------------

    def _stats(self) -> dict[str, Any]:
        return self._call("stats")

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("FakeServerProcess is not running; call start() first")
        return self._process

    def _call(
        self, name: str, payload: dict[str, Any] | None = None, timeout: float = _CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """One control request; a value the child refuses raises ``ValueError``, as it would
        have in process."""
        request = urllib.request.Request(
            f"{self.url}/_fake/{name}",
            data=None if payload is None else json.dumps(payload).encode(),
            method="GET" if payload is None else "POST",
            headers={"content-type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                text = exc.read().decode("utf-8", "replace")
            raise ValueError(f"the fake server refused {name!r}: {error_of(text)}") from None
        except OSError as exc:
            code = self._running().poll()
            state = "is running" if code is None else f"exited with {code}"
            raise RuntimeError(
                f"the fake server process {state} and did not answer {name!r}"
            ) from exc
        return answer

    def __repr__(self) -> str:
        where = self._base_url if self._process is not None else "not running"
        return f"<FakeServerProcess {where}>"
