"""Below the app: aiohttp's HTTP layer made to answer in the contract's JSON and to log
hostile traffic quietly. `make_runner(app)` is how the app is served (server.py, tests).

Owns what happens to a request outside the app's middlewares:
- HTTP framing aiohttp's parser refuses (`Content-Length: +5`, a bad chunk size, NUL in a
  header, an 8 KiB header line, a lowercase method, ...): 400 `bad_request` JSON and one
  warning line, at most `warnings_per_window` of them per window, then one count;
- framing aiohttp accepts but we refuse, before any route runs: a Transfer-Encoding other
  than plain `chunked` (501; 400 in HTTP/1.0), a compressed request body (415), a
  Content-Type that aiohttp's own parser raises on (400);
- an aiohttp HTTP error raised by an expect handler (outside the middlewares): its JSON;
- a client that disconnects mid-request: no traceback, and the access log says 499 (an
  upload's outcome line says `client_aborted`);
- anything else that escapes the app: 500 JSON and one error line with its traceback
  (that one is our bug, so it is worth a traceback).

It must not know routes, uploads or storage, nor change what the app answers.

aiohttp 3.14 has no public hook for the protocol's own errors, so this subclasses
`web.RequestHandler` (its documented-by-source `handle_error`) and builds the server
through `AppRunner._make_server`; tests/test_hostile_http.py pins both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import UploadError
from .http_errors import answer_refusal, client_gone, json_error, refuse

log = logging.getLogger("uploadsrv.http")

_RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# Not an HTTP status anyone receives: the access log's word (nginx's) for a request whose
# client went away before the answer.
CLIENT_CLOSED = 499
WARNINGS_PER_WINDOW = 10
WARNING_WINDOW_S = 60.0
_LOG_TEXT = 200  # characters of a parser message in a log line


def make_runner(app: web.Application, *, warnings_per_window: int = WARNINGS_PER_WINDOW,
                warning_window: float = WARNING_WINDOW_S, **kwargs: Any) -> web.AppRunner:
    """An AppRunner whose connections answer every refusal in JSON and log garbage quietly.

    `kwargs` go to `web.AppRunner` (access_log_format, shutdown_timeout, ...). Request
    bodies are never decompressed (`auto_decompress=False`): a compressed upload is
    refused, so a filter in front and this server always judge the same bytes."""
    kwargs.setdefault("auto_decompress", False)
    return ContractAppRunner(app, warnings=RateLimitedWarnings(log, warnings_per_window, warning_window), **kwargs)


class RateLimitedWarnings:
    """At most `limit` warning lines per `window` seconds; the rest are counted and told
    in one line when their window ends."""

    def __init__(self, logger: logging.Logger, limit: int, window: float) -> None:
        self._logger = logger
        self._limit = limit
        self._window = window
        self._window_end = 0.0
        self._sent = 0
        self._suppressed = 0
        self._summary: asyncio.TimerHandle | None = None

    def warning(self, message: str, *args: object) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._window_end:
            self._window_end = now + self._window
            self._sent = 0
        if self._sent < self._limit:
            self._sent += 1
            self._logger.warning(message, *args)
            return
        self._suppressed += 1
        if self._summary is None:
            self._summary = loop.call_at(self._window_end, self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        if self._suppressed:
            self._logger.warning("%d more bad requests in the last %g s were not logged one by one",
                                 self._suppressed, self._window)
            self._suppressed = 0

    def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        self._summarise()


class ContractAppRunner(web.AppRunner):
    """`web.AppRunner` serving through `ContractRequestHandler` and the framing checks."""

    __slots__ = ("_warnings",)

    def __init__(self, app: web.Application, *, warnings: RateLimitedWarnings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._warnings = warnings

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app's start-up runs here
        return _ContractServer(
            _checked(server.request_handler), warnings=self._warnings,
            request_factory=server.request_factory, handler_cancellation=server.handler_cancellation,
            loop=server._loop, **server._kwargs,
        )

    async def _cleanup_server(self) -> None:
        self._warnings.close()
        await super()._cleanup_server()


class _ContractServer(web.Server):
    def __init__(self, handler: _RequestHandler, *, warnings: RateLimitedWarnings, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.warnings = warnings

    def __call__(self) -> web.RequestHandler:
        # web.Server.__call__ builds a plain RequestHandler; this is the one change.
        return ContractRequestHandler(self, loop=self._loop, warnings=self.warnings, **self._kwargs)


class ContractRequestHandler(web.RequestHandler):
    """A connection whose own errors (framing, disconnects, escaped exceptions) are
    answered in JSON and logged in one line."""

    __slots__ = ("_warnings",)

    def __init__(self, manager: web.Server, *, warnings: RateLimitedWarnings, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._warnings = warnings

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, ConnectionError) and client_gone(request):
            # Routine, and already one line: the access log's 499 (and an upload's outcome
            # line, `code=client_aborted`). Details only when debugging.
            log.debug("client closed the connection during %s %s after %d body bytes",
                      request.method, _printable(request.path), request.content.total_bytes)
            response = web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
            response.force_close()
            return response
        if isinstance(exc, HttpProcessingError):
            text = _one_line(exc.message or message or "")
            self._warnings.warning("bad HTTP request from %s: %s", request.remote, text)
            response = json_error(status, "bad_request", f"the request is not valid HTTP/1.1: {text}")
        elif isinstance(exc, asyncio.TimeoutError):
            log.warning("%s %s timed out in its handler", request.method, _printable(request.path))
            response = json_error(504, "gateway_timeout", "the server took too long to handle this request")
        else:
            log.error("unhandled error in %s %s", request.method, _printable(request.path), exc_info=exc)
            response = json_error(500, "internal_error",
                                  "the server failed to handle this request; it has been logged")
        if request.writer.output_size > 0:
            # Part of another answer went out already: the connection cannot carry this one.
            raise ConnectionError("the response had started; closing the connection")
        response.force_close()
        return response


def _checked(handler: _RequestHandler) -> _RequestHandler:
    """`handler` behind the framing checks, with HTTP errors from outside the app's
    middlewares (expect handlers) answered in JSON."""

    async def checked(request: web.BaseRequest) -> web.StreamResponse:
        refusal = framing_refusal(request)
        if refusal is not None:
            return await refuse(request, refusal)
        try:
            return await handler(request)
        except (UploadError, web.HTTPException) as error:
            answer = await answer_refusal(request, error)
            if answer is None:
                raise
            return answer

    return checked


def framing_refusal(request: web.BaseRequest) -> web.Response | None:
    """The refusal of a request head aiohttp accepted but we do not, or None."""
    codings = [coding.strip().lower() for value in request.headers.getall("Transfer-Encoding", [])
               for coding in value.split(",")]
    if codings and request.version < (1, 1):
        # RFC 9112 6.1: HTTP/1.0 has no chunked framing; such a message's framing is faulty.
        return json_error(400, "bad_request", "Transfer-Encoding is not valid in an HTTP/1.0 request")
    if codings and codings != ["chunked"]:
        said = _printable(", ".join(request.headers.getall("Transfer-Encoding")))
        if codings[-1] == "chunked" and codings.count("chunked") == 1:
            return json_error(501, "not_implemented",
                              f"Transfer-Encoding: {said} is not supported; send the body as it is, "
                              "with Content-Length or 'Transfer-Encoding: chunked' alone")
        return json_error(400, "bad_request", f"Transfer-Encoding: {said} is not valid")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity" and request.body_exists:
        return json_error(415, "unsupported_media_type",
                          f"request bodies are taken as they are, not with Content-Encoding: "
                          f"{_printable(encoding)}; send the file itself")
    if "Content-Type" in request.headers:
        try:
            request.content_type  # noqa: B018 (parsed and cached here, or it fails here)
        except Exception:  # aiohttp hands the value to email's parser, which raises many kinds
            raw = request.headers["Content-Type"]
            multipart = raw.strip().lower().startswith("multipart/")
            return json_error(400, "malformed_multipart" if multipart else "bad_request",
                              f"the Content-Type header cannot be parsed: {_printable(raw)}")
    return None


def _one_line(text: str) -> str:
    """A parser message (several lines, with a '^' pointer line) as one printable line."""
    parts = [part.strip() for part in text.splitlines()]
    joined = " ".join(part for part in parts if part and set(part) != {"^"})
    return _printable(joined)


def _printable(text: str) -> str:
    """Client text fit for one log line: ASCII, no controls, bounded."""
    safe = text.encode("ascii", "backslashreplace").decode("ascii")
    safe = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in safe)
    return safe if len(safe) <= _LOG_TEXT else safe[:_LOG_TEXT] + "..."
