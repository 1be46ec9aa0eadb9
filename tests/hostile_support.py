"""Support for the hostile-input tests: the app served as in production, raw HTTP
exchanges that parse what came back, and checks of what the server logged.

Raw sockets, because the requests under test are ones no well-behaved client sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from support import apoll

from uploadsrv.http_protocol import make_runner


# Property tests: bounded and derandomized (the same examples on every run, so CI is
# stable); UPLOADSRV_HYPOTHESIS_EXAMPLES=500 runs more when hunting.
EXAMPLES = int(os.environ.get("UPLOADSRV_HYPOTHESIS_EXAMPLES", "40"))


def bounded(factor: int = 1) -> Any:
    """hypothesis settings for the default suite: `factor` × EXAMPLES examples, no
    deadline (a loaded CI machine), no example database (nothing written into the
    checkout). hypothesis is imported here, not at the top: conftest imports this module."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=EXAMPLES * factor, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


class ServedLikeProduction(TestServer):
    """aiohttp's TestServer on the runner server.py uses (`http_protocol.make_runner`):
    JSON for HTTP-level refusals, one-line logs, and handlers not cancelled when the
    client goes (aiohttp's default, which TestServer overrides). `runner_kwargs` go to
    `make_runner` (e.g. warnings_per_window=3)."""

    def __init__(self, app: web.Application, **runner_kwargs: Any) -> None:
        super().__init__(app)
        self._runner_kwargs = runner_kwargs

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.pop("handler_cancellation", None)
        return make_runner(self.app, **{**kwargs, **self._runner_kwargs})


@dataclass
class RawResponse:
    """The final response of a raw exchange (1xx interim responses skipped)."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    interim: list[int] = field(default_factory=list)

    def error(self) -> dict[str, Any]:
        """The contract's error object; fails unless the response is one."""
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.headers, self.body[:200])
        payload = json.loads(self.body)
        assert set(payload) == {"error"}, payload
        error = payload["error"]
        assert set(error) == {"status", "code", "message"}, error
        assert error["status"] == self.status, (error, self.status)
        assert isinstance(error["code"], str) and error["code"], error
        assert isinstance(error["message"], str) and error["message"], error
        return dict(error)

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.body[:200])
        return json.loads(self.body)


def parse_response(raw: bytes) -> RawResponse:
    """The last complete final response in `raw`, after any 100 Continue."""
    interim: list[int] = []
    rest = raw
    while True:
        head, separator, rest = rest.partition(b"\r\n\r\n")
        assert separator, f"no complete response in {raw[:300]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            interim.append(status)
            continue
        length = int(headers.get("content-length", len(rest)))
        return RawResponse(status, headers, rest[:length], interim)


async def exchange(port: int, pieces: bytes | Sequence[bytes], *, timeout: float = 10.0) -> RawResponse:
    """Send `pieces` (separate writes: TCP splits), read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        for piece in [pieces] if isinstance(pieces, bytes) else pieces:
            writer.write(piece)
            await writer.drain()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    except (ConnectionResetError, BrokenPipeError):
        # A refusal may close while the rest of a body is still on its way; what the
        # server answered before that is already here.
        received += await _drain(reader)
    finally:
        writer.close()
    return parse_response(received)


async def _drain(reader: asyncio.StreamReader) -> bytes:
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionError:
        pass
    return data


def http_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                 *, content_length: bool = True) -> bytes:
    """A request with Host and Connection: close (so the server closes after answering)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if content_length and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def multipart_request(body: bytes, boundary: str, path: str = "/upload", extra: dict[str, str] | None = None) -> bytes:
    return http_request("POST", path, {"Content-Type": f"multipart/form-data; boundary={boundary}", **(extra or {})},
                        body)


class LogView:
    """What the server logged during one check: records of caplog since `mark()`."""

    def __init__(self, caplog: Any) -> None:
        caplog.set_level(logging.INFO)
        self._caplog = caplog
        self._start = 0

    def mark(self) -> None:
        self._start = len(self._caplog.records)

    @property
    def records(self) -> list[logging.LogRecord]:
        return [record for record in self._caplog.records[self._start:] if not record.name.startswith("asyncio")]

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [record for record in self.records if record.levelno >= level]

    def access(self) -> list[str]:
        return [record.getMessage() for record in self.records if record.name == "aiohttp.access"]

    async def assert_quiet(self, *, access_status: int, warnings: int = 0, logger: str = "uploadsrv.http") -> None:
        """One access line with `access_status`, `warnings` one-line warnings from
        `logger`, nothing else at WARNING or above, and no traceback anywhere.

        Waits for the access line: a refusal that closes the connection while the body
        still arrives is logged after the client has seen the close."""
        await apoll(lambda: len(self.access()) >= 1, timeout=5)
        tracebacks = [record for record in self.records if record.exc_info or record.stack_info]
        assert not tracebacks, [(record.name, record.getMessage()) for record in tracebacks]
        loud = self.at_least(logging.WARNING)
        assert [record.name for record in loud] == [logger] * warnings, [(r.name, r.getMessage()) for r in loud]
        assert all("\n" not in record.getMessage() for record in self.records)
        access = self.access()
        assert len(access) == 1, access
        assert f'" {access_status} ' in access[0], access


    async def assert_client_abort(self) -> None:
        """A client that left mid-upload: a 499 access line, one info line from the
        uploads logger saying so, and no traceback."""
        await apoll(lambda: len(self.access()) == 1)
        assert '" 499 ' in self.access()[0]
        others = [r for r in self.at_least(logging.INFO) if r.name != "aiohttp.access"]
        assert [(r.name, r.levelname) for r in others] == [("uploadsrv.uploads", "INFO")]
        assert "code=client_aborted" in others[0].getMessage()
        assert not [r for r in self.records if r.exc_info]


async def assert_health_fast(port: int, limit: float = 1.0) -> None:
    """The server still answers /health, quickly."""
    started = time.monotonic()
    response = await exchange(port, http_request("GET", "/health"))
    assert response.status == 200, response
    assert time.monotonic() - started < limit
