"""Peer "aiohttp raw": the ceiling for any aiohttp application.

POST /upload takes the request body as is (no multipart parsing, no type check, no
hashing) and writes it to a file in --dir with plain blocking writes on the event loop,
reading with `request.content.iter_chunked(1 MiB)`. Every server the benchmark runs
must do more work than this one, so its MB/s is the 1.0 of the ratio column.

Standalone: python3 aiohttp_raw.py --port P --dir D (binds 127.0.0.1 only).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from aiohttp import web
from peer_args import parse_peer_args

CHUNK = 1024 * 1024
DIRECTORY = web.AppKey("directory", Path)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def upload(request: web.Request) -> web.Response:
    path = request.app[DIRECTORY] / f"{uuid.uuid4().hex}.bin"
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK):
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        # A dropped client leaves no partial file behind.
        path.unlink(missing_ok=True)
        raise
    # The server does not hash; the harness hashes the stored file for every server.
    return web.json_response({"name": path.name, "size": size, "sha256": None}, status=201)


def make_app(directory: Path) -> web.Application:
    app = web.Application()
    app[DIRECTORY] = directory
    app.router.add_get("/health", health)
    app.router.add_post("/upload", upload)
    return app


def main() -> None:
    args = parse_peer_args(__doc__.splitlines()[0])
    web.run_app(make_app(args.directory), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
