"""A bounded, quiet exit for the providers the auto import set up itself.

The SDK's providers flush through their exporters at exit, and an OTLP exporter that cannot
reach its endpoint retries with backoff for up to its timeout (10 s by default), per signal,
logging a line for every try: a short script run without a collector would end ten seconds late
under a screenful of errors. So these providers are shut down at exit in parallel, each on a
daemon thread, and the interpreter waits until they are done, until an exporter reports a
failure (a retry at exit rarely succeeds and always delays), or :data:`EXIT_TIMEOUT_S` has
passed. What the exporters logged meanwhile becomes at most one line. Delivery to a collector
that answers is not affected: it is done in milliseconds. Providers the application installed
itself are never handed to this module.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

__all__ = ["EXIT_TIMEOUT_S", "shutdown_at_exit"]

EXIT_TIMEOUT_S = 1.0
"""The longest the interpreter waits at exit for our providers' final exports."""

_EXPORTERS = "opentelemetry.exporter"
"""The parent logger of every OTLP exporter (HTTP and gRPC)."""

_logger = logging.getLogger("otel_openai_retry")


class _Progress(logging.Handler):
    """Counts the shutdowns still running and takes the exporters' complaints, waking the
    waiting exit handler at each change."""

    def __init__(self, running: int) -> None:
        super().__init__(logging.WARNING)
        self.running = running
        self.failed = False
        self.changed = threading.Event()
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        self.failed = True
        self.changed.set()

    def finished(self) -> None:
        with self._lock:
            self.running -= 1
        self.changed.set()

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.running and not self.failed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.changed.wait(left)
            self.changed.clear()


def _is_shut_down(provider: object) -> bool:
    """Whether the application shut the provider down itself already: the SDK's providers drop
    their exit handler then (a second shutdown would only log a complaint)."""
    handler = getattr(provider, "_atexit_handler", getattr(provider, "_at_exit_handler", True))
    return handler is None


def shutdown_at_exit(providers: Iterable[object], endpoint: str) -> None:
    """Take over the exit-time shutdown of ``providers`` (SDK providers we installed)."""
    ours = [provider for provider in providers if callable(getattr(provider, "shutdown", None))]
    for provider in ours:
        atexit.unregister(provider.shutdown)  # type: ignore[attr-defined]
    atexit.register(_shut_down, ours, endpoint)


def _run(shutdown: Callable[[], object], progress: _Progress) -> None:
    try:
        shutdown()
    finally:
        progress.finished()


def _shut_down(providers: Sequence[object], endpoint: str) -> None:
    live = [provider for provider in providers if not _is_shut_down(provider)]
    if not live:
        return
    exporters = logging.getLogger(_EXPORTERS)
    progress = _Progress(len(live))
    propagate = exporters.propagate
    exporters.addHandler(progress)
    exporters.propagate = False
    for provider in live:
        shutdown = provider.shutdown  # type: ignore[attr-defined]
        name = f"otel-openai-retry exit: {type(provider).__name__}"
        threading.Thread(target=_run, args=(shutdown, progress), name=name, daemon=True).start()
    progress.wait(EXIT_TIMEOUT_S)
    if progress.failed:
        _logger.warning(
            "otel-openai-retry: telemetry not delivered at exit: OTLP endpoint %s unreachable "
            "(no collector? OTEL_TRACES_EXPORTER=none and OTEL_METRICS_EXPORTER=none send nothing)",
            endpoint,
        )
    elif progress.running:
        _logger.warning(
            "otel-openai-retry: telemetry not delivered at exit: OTLP endpoint %s did not answer "
            "within %g s",
            endpoint,
            EXIT_TIMEOUT_S,
        )
    else:  # all done: nothing is left running that could still complain
        exporters.removeHandler(progress)
        exporters.propagate = propagate
