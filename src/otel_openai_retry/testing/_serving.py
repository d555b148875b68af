"""The server thread's plumbing: what it reports at start-up, and how its loop is emptied."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

__all__ = ["Running", "Startup", "cancel_leftovers"]


@dataclass(frozen=True)
class Running:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    port: int


class Startup:
    """The server thread's report to start(): the port it bound, or why it could not."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.port: int | None = None
        self.error: BaseException | None = None


def cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel whatever the shutdown left behind, so that closing the loop warns about nothing."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
