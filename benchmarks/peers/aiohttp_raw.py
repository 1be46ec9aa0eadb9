"""Peer "aiohttp raw": the ceiling for any aiohttp application.

POST /upload takes the request body as is (no multipart parsing, no type check, no
hashing) and writes it to a file in --dir with plain blocking writes on the event loop,
reading with `request.content.iter_chunked(1 MiB)`. Every server the benchmark runs
must do more work than this one, so its MB/s is the 1.0 of the ratio column.

Standalone: python3 aiohttp_raw.py --port P --dir D (binds 127.0.0.1 only).
"""

from __future__ import annotations

import uuid

from aiohttp import web
from aiohttp_peer import DIRECTORY, serve

CHUNK = 1024 * 1024


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


def main() -> None:
    serve(__doc__.splitlines()[0], upload)


if __name__ == "__main__":
    main()
