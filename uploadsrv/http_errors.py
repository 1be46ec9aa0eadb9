"""Domain errors as HTTP responses: the contract's JSON shape, rendered in one place.

Also owns how a refusal ends the connection: while the client may still be sending a
large body, the answer is written and the connection closed at once, instead of
aiohttp's lingering close, which would read and discard up to 10 s of upload.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .errors import UploadError


def json_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"status": status, "code": code, "message": message}}
    response = web.json_response(body, status=status, headers=headers)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="uploadsrv"'
    return response


def error_response(error: UploadError) -> web.Response:
    return json_error(error.status, error.code, error.message, error.headers)


async def refuse(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Send the error `response`; if body bytes may still arrive, close after answering."""
    if request.body_exists and not request.content.is_eof():
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        # Closing now (after the answer is flushed) stops the read of the rest of the body.
        request.protocol.force_close()
    return response
