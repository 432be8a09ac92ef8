"""A throwaway Redis server for tests.

`RedisServer.start()` runs Debian's `redis-server` on a free port of 127.0.0.1, in a
fresh temporary directory, with no persistence (no RDB snapshots, no AOF); `stop()`
stops it and removes the directory, and an `atexit` hook does the same if the test run
dies before. `redis_server` is the session fixture: where `redis-server` is missing it
skips — except in CI (`CI=1`), where it fails.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

START_TIMEOUT_S = 10.0


class RedisUnavailable(RuntimeError):
    """redis-server could not be started; the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self) -> None:
        self.dir: Path | None = None
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            raise RedisUnavailable("redis-server not found (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="pondbot-redis-"))
        atexit.register(self.stop)
        last = ""
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = _free_port()
            self._proc = subprocess.Popen(
                [
                    binary, "--bind", "127.0.0.1", "--port", str(self.port),
                    "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
                    "--logfile", str(self.dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self._proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5
                ) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
                time.sleep(0.05)
            log = self.dir / "redis.log"
            last = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self._kill()
        self.stop()
        raise RedisUnavailable(f"redis-server did not start:\n{last}")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call more than once."""
        self._kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except RedisUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"no Redis: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The server's URL, emptied after the test (each test starts with no keys)."""
    yield redis_server.url
    client = Redis.from_url(redis_server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
