"""Middlewares, outermost first: errors to JSON, bearer auth, upload size precheck.

`error_middleware` is the one place where an exception becomes a response. The
precheck refuses an upload from its headers alone (415, 413) before any body byte is
read; the same checks run in the routes' `Expect: 100-continue` handler, which aiohttp
calls before any middleware.
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
from .upload_handlers import check_upload_head

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
    check_token(request, request.app[CONFIG].auth.tokens)
    return await handler(request)


@web.middleware
async def upload_precheck_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST":
        check_upload_head(request, request.app[CONFIG].limits)
    return await handler(request)
