"""A real Redis for the tests: Debian's `redis-server` on a free loopback port.

Started in a temp folder with no persistence (no RDB snapshots, no AOF), stopped by its
PID. Tests that need it skip, with the reason, where `redis-server` is not installed.
Use the `redis_server` fixture, or `locks_backend` to run a test once with file locks and
once with Redis locks (import them into a test module or conftest.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import free_port

STARTUP_TIMEOUT = 10.0


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """SIGTERM by PID (no snapshot is saved: persistence is off), then wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(folder: Path) -> RedisServer:
    """A running redis-server that keeps its files (only a log) in `folder`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # another test may take the free port first
        port = free_port()
        log = folder / "redis.log"
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return RedisServer(process, port, log)
            time.sleep(0.02)
        RedisServer(process, port, log).stop()
    raise AssertionError(f"redis-server did not start: {log.read_text() if log.exists() else 'no log'}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["file", "redis"])
def locks_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A `[locks]` section for `make_config` / the `start` fixture: `start(locks=locks_backend)`.
    The "redis" run gets its own redis-server; see `held_locks` for what is held."""
    if request.param == "file":
        yield {"backend": "file"}
        return
    server = start_redis(tmp_path / "redis")
    try:
        yield {"backend": "redis", "redis_url": server.url}
    finally:
        server.stop()


def held_locks(tmp_dir: Path, locks: Any) -> list[str]:
    """The locks held now: lock files under `tmp_dir`, or lease keys in Redis (`locks` is
    the config's `LocksConfig`)."""
    if locks.backend == "redis":
        import redis
        with redis.Redis.from_url(locks.redis_url, decode_responses=True) as client:
            return sorted(client.keys("uploadsrv:*:lock"))
    folder = tmp_dir / "locks"
    return sorted(f"locks/{name}" for name in os.listdir(folder)) if folder.is_dir() else []
