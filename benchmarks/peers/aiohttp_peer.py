"""What the two aiohttp peers share: `GET /health`, the upload folder behind an AppKey,
and serving on 127.0.0.1 with `--port` and `--dir`. Each peer brings its own upload
handler."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from peer_args import parse_peer_args

DIRECTORY = web.AppKey("directory", Path)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def serve(description: str, upload: Handler) -> None:
    """Serve `upload` at POST /upload until interrupted."""
    args = parse_peer_args(description)
    app = web.Application()
    app[DIRECTORY] = args.directory
    app.router.add_get("/health", health)
    app.router.add_post("/upload", upload)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)
