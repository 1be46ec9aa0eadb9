"""Test support: configs in a temp folder, hand-built multipart bodies, raw HTTP.

Hand-built bodies are how the parser traps are reached: no well-behaved client sends a
truncated body, a second `file` part or non-UTF-8 headers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from uploadsrv.config import Config, config_from_mapping

BOUNDARY = "testboundary7MA4YWxkTrZu0gW"


def make_config(base: Path, **sections: Mapping[str, Any]) -> Config:
    """A config rooted in `base`; storage defaults to base/files and base/tmp, no disk floor."""
    data: dict[str, dict[str, Any]] = {"storage": {"dir": "files", "tmp_dir": "tmp", "min_free_space": 0}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_mapping(data, base)


@dataclass
class Running:
    """A real app on loopback, its client and what it left on disk."""

    client: TestClient
    config: Config

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port

    def stored(self) -> list[str]:
        return sorted(os.listdir(self.config.storage.dir))

    def temp(self) -> list[str]:
        """What tmp_dir holds; the lock folder counts by its files (held locks), not itself."""
        return temp_files(Path(self.config.storage.tmp_dir))

    def assert_nothing_left(self) -> None:
        assert self.stored() == [], f"storage.dir is not empty: {self.stored()}"
        assert self.temp() == [], f"storage.tmp_dir is not empty: {self.temp()}"


def temp_files(tmp: Path) -> list[str]:
    names: list[str] = []
    for name in sorted(os.listdir(tmp)):
        if name == "locks" and (tmp / name).is_dir():
            names += [f"locks/{lock}" for lock in sorted(os.listdir(tmp / name))]
        else:
            names.append(name)
    return names


def part(name: str, data: bytes, *, filename: str | None = None, content_type: str | None = None,
         raw_headers: bytes | None = None) -> bytes:
    """One multipart part (delimiter line included)."""
    if raw_headers is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        raw_headers = f"Content-Disposition: {disposition}\r\n".encode()
        if content_type:
            raw_headers += f"Content-Type: {content_type}\r\n".encode()
    return b"--" + BOUNDARY.encode() + b"\r\n" + raw_headers + b"\r\n" + data + b"\r\n"


def form(*parts: bytes, close: bool = True) -> bytes:
    """A multipart body from parts; `close=False` leaves out the closing boundary."""
    body = b"".join(parts)
    if close:
        body += b"--" + BOUNDARY.encode() + b"--\r\n"
    return body


FORM_CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def raw_exchange(port: int, head: bytes, body: bytes = b"", *, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sent until it closed or went quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await read_until_close(reader, read_timeout)
    finally:
        writer.close()


async def read_until_close(reader: asyncio.StreamReader, timeout: float) -> bytes:
    received = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def request_head(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(raw: bytes) -> int:
    """The final status in a raw response (skips a 100 Continue)."""
    text = raw.decode("latin-1")
    statuses = [int(line.split()[1]) for line in text.split("\r\n") if line.startswith("HTTP/1.1 ")]
    finals = [status for status in statuses if status != 100]
    assert finals, f"no final status in {text[:300]!r}"
    return finals[0]


def poll(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Wait until `condition()` holds (never a fixed sleep); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


async def apoll(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """The real `python -m uploadsrv` process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_serving(process: subprocess.Popen[bytes], url: str, output: Callable[[], str],
                 timeout: float = 20) -> None:
    """Poll `url` until it answers 200. A process that exits meanwhile fails the test with
    `output()`; one that does not come up in time is killed."""
    import urllib.request

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited with {process.returncode}: {output()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        poll(serving, timeout=timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise


def start_process(config_path: Path | None, cwd: Path, *args: str, port: int | None = None) -> ServerProcess:
    """Start the CLI (on `port`, or a free one) and wait, polling /health, until it serves;
    a process that does not come up is killed."""
    port = port or free_port()
    log = cwd / "server.log"
    command = [sys.executable, "-m", "uploadsrv", "--port", str(port), *args]
    if "--workers" not in args:
        command += ["--workers", "1"]  # one process unless the test asks for more
    if config_path is not None:
        command += ["--config", str(config_path)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

    wait_serving(process, f"http://127.0.0.1:{port}/health", lambda: log.read_text())
    return ServerProcess(process, port, log)
