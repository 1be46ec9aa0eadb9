"""`GET /`: the upload page (static HTML with a small script, shipped in the package)."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from .appkeys import PAGE

def load_page() -> bytes:
    return files("uploadsrv").joinpath("static/index.html").read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=request.app[PAGE], content_type="text/html", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
