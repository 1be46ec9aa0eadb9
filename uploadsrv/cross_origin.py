"""Headers every response carries: CORS for the configured origins, `Tus-Resumable` on
the tus paths. Also answers CORS preflights, before auth (a preflight carries no token).

Applied through `on_response_prepare`, so responses that no middleware sees (those of
the `Expect: 100-continue` handlers) carry them too.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import CONFIG
from .tus_rules import TUS_VERSION

# What a browser's script may read of our answers: what tus-js-client and Uppy need.
EXPOSED = ", ".join((
    "Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
    "Upload-Expires", "Upload-Concat", "Tus-Resumable", "Tus-Version", "Tus-Extension",
    "Tus-Max-Size", "Tus-Checksum-Algorithm", "Retry-After",
))
ALLOWED_HEADERS = ", ".join((
    "Authorization", "Content-Type", "Tus-Resumable", "Upload-Length", "Upload-Defer-Length",
    "Upload-Metadata", "Upload-Offset", "Upload-Concat", "Upload-Checksum",
    "X-HTTP-Method-Override", "X-Requested-With", "Range",
))
ALLOWED_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
PREFLIGHT_MAX_AGE = "86400"


def allowed_origin(request: web.BaseRequest) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when the origin is not allowed."""
    origin = request.headers.get("Origin")
    app: web.Application | None = getattr(request, "app", None)  # a bare BaseRequest has none
    origins = app[CONFIG].cors.origins if app is not None else ()
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.rstrip("/") in origins else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        origin = allowed_origin(request)
        if origin is None:
            return web.Response(status=204)  # no CORS headers: the browser refuses
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        })
    return await handler(request)


async def add_response_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    if request.path == "/files" or request.path.startswith("/files/"):
        response.headers["Tus-Resumable"] = TUS_VERSION
    origin = allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        if origin != "*":
            response.headers["Vary"] = "Origin"
