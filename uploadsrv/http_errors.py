"""Domain errors as HTTP responses: the contract's JSON shape, rendered in one place.

Also owns how a refusal ends the connection while the client may still be sending a
large body. aiohttp's lingering close would read and discard up to 10 s of upload
(477 MiB at 50 MB/s); closing at once makes the kernel reset the connection, and curl
then reports its failed send instead of the answer it already received. So after the
answer the server discards briefly, bounded in bytes and time (clients that read the
answer stop sending within milliseconds), then closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from http import HTTPStatus

from aiohttp import StreamReader, web

from .errors import UploadError


def json_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"status": status, "code": code, "message": message}}
    response = web.json_response(body, status=status, headers=headers)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="uploadsrv"'
    return response


def error_response(error: UploadError) -> web.Response:
    return json_error(error.status, error.code, error.message, error.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}


def http_error_response(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP error (404, 405, 413, 417, ...) in the contract's JSON shape."""
    code = _HTTP_CODES.get(exc.status, HTTPStatus(exc.status).phrase.lower().replace(" ", "_"))
    message = exc.text if exc.status not in (404, 405) else _routing_message(request, exc)
    allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_error(exc.status, code, message or exc.reason, allow)


def _routing_message(request: web.BaseRequest, exc: web.HTTPException) -> str:
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    return f"nothing at {request.path}"


def client_gone(request: web.BaseRequest) -> bool:
    """Whether the client's connection is closed (or closing): nothing can reach it."""
    transport = request.transport
    return transport is None or transport.is_closing()


# What a refused client may still push (socket buffers hold several MiB on loopback)
# before it has read the answer and stopped.
DISCARD_BYTES = 16 << 20
DISCARD_SECONDS = 2.0


async def answer_refusal(request: web.BaseRequest, error: Exception) -> web.StreamResponse | None:
    """The JSON answer to a domain error or an HTTP error status, or None for anything
    else: the one rendering of refusals, for the middleware and for what runs outside it."""
    if isinstance(error, UploadError):
        return await refuse(request, error_response(error))
    if isinstance(error, web.HTTPException) and error.status >= 400:
        return await refuse(request, http_error_response(request, error))
    return None


async def refuse(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Send the error `response`; if body bytes may still arrive, close soon after."""
    if request.body_exists and not request.content.is_eof():
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        await _discard_briefly(request.content)
        request.protocol.force_close()
    return response


# A client that has read the answer goes quiet; no need to wait out DISCARD_SECONDS.
QUIET_SECONDS = 0.25


async def _discard_briefly(content: StreamReader) -> None:
    discarded = 0
    try:
        async with asyncio.timeout(DISCARD_SECONDS):
            while discarded < DISCARD_BYTES and not content.is_eof():
                async with asyncio.timeout(QUIET_SECONDS):
                    discarded += len(await content.readany())
    except (TimeoutError, ConnectionError, web.HTTPException):
        pass
