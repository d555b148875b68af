"""A real ``redis-server`` per session on a free loopback port (no persistence), and one of its
own for each test that stops and restarts it. ``make redis`` installs Debian's where it is
missing; without any, these tests skip and say why. And what the fleet tests share: the policy,
a crowd of async calls, the warnings logged, waiting for the reporter."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest
import redis

from otel_openai_retry import RetryPolicy
from otel_openai_retry._endpoints import EndpointGuard

from ..helpers import FAST, MESSAGES
from ..helpers import crowd as many_calls

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` in a child process, stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def start(self) -> None:
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self._directory)]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise
                time.sleep(0.01)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
        self.client.connection_pool.disconnect()

    def scripts_run(self) -> int:
        """Scripts the server has run so far: one per reservation, one per endpoint per report
        (the commands a script runs count apart from it in ``total_commands_processed``)."""
        stats = self.client.info("commandstats")
        return sum(
            int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
        )


def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH (`make redis` installs Debian's where it can)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from _server(tmp_path_factory)


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> RedisServer:
    """The session's Redis, emptied for the test."""
    _redis_session.client.flushall()
    return _redis_session


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the test's own, to stop and start."""
    yield from _server(tmp_path_factory)


# -- what the tests share --------------------------------------------------------------------


def fleet(url: str) -> RetryPolicy:
    return replace(FAST, max_attempts=10, redis_url=url)


def redis_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "otel_openai_retry" and r.levelno >= logging.WARNING
    ]


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def in_use(guard: EndpointGuard) -> bool:
    """A send (so the guard's process reports, and hears the fleet back); always true."""
    guard.sent(time.monotonic())
    return True


async def crowd(client: openai.AsyncOpenAI, count: int, concurrency: int) -> list[bool]:
    return await many_calls(client, count, concurrency, lambda _: {"messages": MESSAGES})
