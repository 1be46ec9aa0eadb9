"""Middlewares, outermost first: errors to JSON, then bearer auth.

`error_middleware` is the one place where an exception raised inside the app becomes a
response (`http_protocol` does the same, with the same renderers from `http_errors`, for
what fails below the app: HTTP framing, expect handlers). Upload admission (413, 415,
429, 507) is each upload route's policy (`admission`), not a middleware, because the
routes' `Expect: 100-continue` handlers run before middlewares.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import CONFIG
from .auth import check_token
from .errors import UploadError
from .http_errors import answer_refusal, client_gone, json_error, refuse

log = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (UploadError, web.HTTPException) as error:
        answer = await answer_refusal(request, error)
        if answer is None:
            raise
        return answer
    except asyncio.CancelledError:
        raise
    except Exception as error:
        if isinstance(error, ConnectionError) and client_gone(request):
            raise  # the client left: routine, logged as a 499 by the access log
        # Anything else, a ConnectionError from a backend (S3, Redis, a hook) included.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return await refuse(
            request,
            json_error(500, "internal_error", "the server failed to handle this request; it has been logged"),
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # OPTIONS only tells what the server speaks (tus discovery, CORS preflight).
    if request.method != "OPTIONS":
        check_token(request, request.app[CONFIG].auth.tokens)
    return await handler(request)
