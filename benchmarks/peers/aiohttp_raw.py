"""Peer "aiohttp raw": the ceiling for any aiohttp application.

POST /upload takes the request body as is (no multipart parsing, no type check, no
hashing) and writes it to a file in --dir with plain blocking writes on the event loop,
reading with `request.content.iter_chunked(1 MiB)`. Every server the benchmark runs
must do more work than this one, so its MB/s is the 1.0 of the "x raw" column.

`store_body(request, durable=True)` is the same handler plus fsync of the file and its
folder in a thread before answering: the peer "aiohttp raw + fsync"
(aiohttp_raw_fsync.py) uses it, so the two differ in nothing else.

Standalone: python3 aiohttp_raw.py --port P --dir D (binds 127.0.0.1 only).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from aiohttp import web
from aiohttp_peer import DIRECTORY, serve

CHUNK = 1024 * 1024


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


async def store_body(request: web.Request, durable: bool = False) -> web.Response:
    """Write the body to a new file; with `durable`, fsync file and folder (off the loop)."""
    path = request.app[DIRECTORY] / f"{uuid.uuid4().hex}.bin"
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK):
                out.write(chunk)
                size += len(chunk)
            if durable:
                out.flush()
                # fsync blocks for as long as the disk takes; a thread keeps the loop free.
                await asyncio.to_thread(os.fsync, out.fileno())
        if durable:
            # The new name must survive a crash too, as uploadsrv guarantees.
            await asyncio.to_thread(fsync_folder, path.parent)
    except BaseException:
        # A dropped client leaves no partial file behind.
        path.unlink(missing_ok=True)
        raise
    # The server does not hash; the harness hashes the stored file for every server.
    return web.json_response({"name": path.name, "size": size, "sha256": None}, status=201)


async def upload(request: web.Request) -> web.Response:
    return await store_body(request)


def main() -> None:
    serve(__doc__.splitlines()[0], upload)


if __name__ == "__main__":
    main()
