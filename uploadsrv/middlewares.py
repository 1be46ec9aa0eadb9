"""Middlewares, outermost first: errors to JSON, then bearer auth.

`error_middleware` is the one place where an exception becomes a response. Upload
admission (413, 415, 429, 507) is each upload route's policy (`admission`), not a
middleware, because the routes' `Expect: 100-continue` handlers run before middlewares.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import CONFIG
from .auth import check_token
from .errors import UploadError
from .http_errors import error_response, json_error, refuse

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UploadError as error:
        return await refuse(request, error_response(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, HTTPStatus(exc.status).phrase.lower().replace(" ", "_"))
        message = exc.text if exc.status not in (404, 405) else _routing_message(request, exc)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return await refuse(request, json_error(exc.status, code, message or exc.reason, allow))
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return await refuse(
            request,
            json_error(500, "internal_error", "the server failed to handle this request; it has been logged"),
        )


def _routing_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    return f"nothing at {request.path}"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # OPTIONS only tells what the server speaks (tus discovery, CORS preflight).
    if request.method != "OPTIONS":
        check_token(request, request.app[CONFIG].auth.tokens)
    return await handler(request)
