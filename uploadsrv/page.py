"""`GET /` and `GET /static/{name}`: the upload page and the few files it loads, all
shipped in the package (`uploadsrv/static/`), so the page works with no network access
beyond this server: no CDN, no build step.

Owns only what the browser receives for the page. It must not serve anything outside the
fixed list of static files, and never anything behind the token: the page has to load
before the person has typed one.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from aiohttp import web

from .appkeys import PAGE

# The only names `/static/` serves; anything else is a JSON 404 (no directory listing, no
# path from the request ever reaches the filesystem).
STATIC_FILES = frozenset({"app.js", "tus.min.js"})

# The page's own script and the vendored tus-js-client come from this server only. Uploads
# go to the tus endpoint's absolute Location, which is this server unless
# `server.public_url` names another origin, so connections are not narrowed to 'self'.
# blob: is how a protected file is opened (fetched with the token, then shown in a tab
# that inherits this policy; `*` does not cover blob:).
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'", "connect-src * blob:",
    "img-src 'self' blob: data:", "media-src 'self' blob:", "object-src 'none'", "base-uri 'none'",
    "form-action 'none'", "frame-ancestors 'none'",
))


def load_page() -> bytes:
    return files("uploadsrv").joinpath("static/index.html").read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=request.app[PAGE], content_type="text/html", charset="utf-8", headers={
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        # Revalidated on every load (the scripts by ETag), so after an upgrade the page and
        # its scripts never come from two versions.
        "Cache-Control": "no-cache",
    })


async def static_file(request: web.Request) -> web.FileResponse:
    """One of `STATIC_FILES`, with ETag and Last-Modified (FileResponse stats off the loop)."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    # setup.cfg ships static/* as package data beside this module (never zipped).
    return web.FileResponse(Path(__file__).parent / "static" / name, headers={
        "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
    })
