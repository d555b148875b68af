"""The child process's side of :class:`FakeServerProcess`: its first line, its end, its errors."""

from __future__ import annotations

import json
import subprocess
import threading

__all__ = ["end", "error_of", "first_line"]

_STOP_TIMEOUT_S = 10.0


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's first line of output, or ``""`` if none came within ``timeout``.

    A timer kills a child that stays silent, which ends the read: the pipe is only ever read
    from this thread.
    """
    assert process.stdout is not None
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        return process.stdout.readline().strip()
    finally:
        watchdog.cancel()


def error_of(text: str) -> str:
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text


def end(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode
