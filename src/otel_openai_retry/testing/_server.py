"""The public server object: an aiohttp app on loopback, on a thread and event loop of its own.

Its own thread and loop, so that the same object serves a sync test, an async test on any loop, a
benchmark, or a demo, and so that a client blocking its loop (a sync SDK call inside an async
test, say) cannot stall the server and turn into a misleading timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web

from ._app import FakeOpenAIApp
from ._chaos import Chaos
from ._faults import Fault
from ._server_conditions import ServerConditions
from ._serving import Running, Startup, cancel_leftovers
from ._state import RecordedRequest, ServerState

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FakeOpenAIServer"]

_SHUTDOWN_TIMEOUT_S = 2.0
"""How long stop() lets an in-flight answer finish. Delayed answers are cut short regardless."""


_BACKLOG = 1024
"""Room for a burst of new connections (a test opening hundreds at once) while the loop is busy:
an overflowing accept queue drops SYNs, which a client sees as a connect timeout, not a fault."""


class FakeOpenAIServer(ServerConditions):
    """A scriptable OpenAI-compatible HTTP server for testing retry behaviour with the real SDK.

    ::

        with FakeOpenAIServer() as server:
            server.script(Fault.rate_limit(retry_after_ms=50), Fault.server_error())
            client = OpenAI(api_key="sk-test", base_url=server.base_url)
            client.chat.completions.create(model="gpt-4o-mini", messages=[...])
            assert [r.fault.status_code for r in server.requests] == [429, 500, 200]

    Each request pops the next :class:`Fault` (the path's own queue first, then the global one);
    once the script is used up, requests succeed. Every request is journaled in
    :attr:`requests`. All methods are safe to call from any thread.

    Args:
        host: Interface to bind; loopback by default, so nothing outside the machine can reach it.
        port: ``0`` lets the OS pick a free port, so parallel test runs never collide.
        on_request: Called with each :class:`RecordedRequest` as it arrives, on the server's
            thread (keep it quick); the command line uses it to log requests.
        chaos: Start in chaos mode (:meth:`set_chaos`).

    The server-wide conditions (rate limits, latency, chaos, ...) are :class:`ServerConditions`'
    calls.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_request: Callable[[RecordedRequest], None] | None = None,
        chaos: Chaos | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._state = ServerState(on_request)
        if chaos is not None:
            self.set_chaos(chaos)
        self._lifecycle = threading.Lock()
        self._running: Running | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve; returns once the port accepts connections. A no-op when running."""
        with self._lifecycle:
            if self._running is not None:
                return
            startup = Startup()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._serve,
                args=(loop, startup),
                name="FakeOpenAIServer",
                # A test that forgets stop() must still let the interpreter exit.
                daemon=True,
            )
            thread.start()
            startup.done.wait()
            if startup.error is not None or startup.port is None:
                thread.join()
                raise RuntimeError(
                    f"FakeOpenAIServer could not listen on {self._host}:{self._requested_port}"
                ) from startup.error
            self._running = Running(thread=thread, loop=loop, port=startup.port)

    def stop(self) -> None:
        """Stop serving and join the thread; in-flight delayed answers are dropped. Idempotent."""
        with self._lifecycle:
            running = self._running
            if running is None:
                return
            if threading.current_thread() is running.thread:
                raise RuntimeError("stop() called from the server's own thread would deadlock")
            self._running = None
            running.loop.call_soon_threadsafe(running.loop.stop)
            running.thread.join()

    def _serve(self, loop: asyncio.AbstractEventLoop, startup: Startup) -> None:
        asyncio.set_event_loop(loop)
        try:
            app = FakeOpenAIApp(self._state)
            runner = web.AppRunner(
                app.build(),
                access_log=None,
                # A client that hangs up (e.g. its timeout fired during a delay) ends the handler.
                handler_cancellation=True,
                shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
            )
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._host, self._requested_port, backlog=_BACKLOG)
            loop.run_until_complete(site.start())
            startup.port = int(runner.addresses[0][1])
        except BaseException as exc:
            startup.error = exc
            startup.done.set()
            loop.close()
            return
        startup.done.set()
        try:
            loop.run_forever()
        finally:
            app.release_waiters()
            loop.run_until_complete(runner.cleanup())
            cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

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

    async def __aenter__(self) -> Self:
        # Off the caller's loop: binding is quick, but joining a thread on stop() may not be.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- where it listens -----------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._running is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port; known once started (with ``port=0``, a new one at each start)."""
        running = self._running
        if running is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first")
        return running.port

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to ``OpenAI``/``AsyncOpenAI``: ``http://host:port/v1``."""
        return f"{self.url}/v1"

    @property
    def url(self) -> str:
        """``http://host:port``: what to pass as ``azure_endpoint`` to ``AzureOpenAI``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- script and journal ---------------------------------------------------------------------

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """Queue faults for the next requests, in order.

        Args:
            faults: One per request; requests beyond the script get :meth:`Fault.ok`.
            path: Only requests to this path consume these faults, before the global queue is
                consulted (e.g. ``"/v1/embeddings"``; ``"/embeddings"`` means the same).
        """
        self._state.script(faults, path)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        return self._state.requests

    @property
    def request_count(self) -> int:
        return self._state.request_count

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet used: non-zero after a test means fewer attempts than planned."""
        return self._state.pending_faults()

    def reset(self) -> None:
        """Forget the script, the journal and the conditions, e.g. between tests."""
        self._state.reset()

    def status_counts(self) -> dict[str, int]:
        """Requests received by the answer they got: ``{"200": 950, "429": 61, "drop": 2}``."""
        return self._state.status_counts()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` requests have arrived in all; ``False`` if ``timeout`` ran out."""
        return self._state.wait_for_requests(n, timeout)

    def __repr__(self) -> str:
        running = self._running
        where = f"http://{self._host}:{running.port}/v1" if running else "not running"
        return f"<FakeOpenAIServer {where}>"
