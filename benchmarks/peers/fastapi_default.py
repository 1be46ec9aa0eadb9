"""Peer "FastAPI default": the upload recipe most FastAPI answers give.

POST /upload does `form = await request.form()`: Starlette's python-multipart parser
spools the file part into an `UploadFile` (a SpooledTemporaryFile that rolls over to
disk in $TMPDIR after 1 MiB). The handler then copies `upload.file` to the destination
with `shutil.copyfileobj` in Starlette's threadpool, hashing while it copies, and closes
the form (which deletes the spool file). Served by uvicorn with the packages FastAPI's
docs install (uvicorn[standard]: httptools and uvloop when present).

uvicorn's access log is turned off: the benchmark's /health prober sends 100 requests a
second, and logging them would be charged to the upload being measured.

Standalone: python3 fastapi_default.py --port P --dir D (binds 127.0.0.1 only).
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from peer_args import parse_peer_args


class HashingWriter:
    """A file object for copyfileobj that hashes what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)


def copy_and_hash(source: BinaryIO, destination: Path) -> tuple[str, int]:
    with destination.open("wb") as out:
        writer = HashingWriter(out)
        shutil.copyfileobj(source, writer)
    return writer.digest.hexdigest(), writer.size


def make_app(directory: Path) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/upload", status_code=201)
    async def upload(request: Request) -> dict[str, object]:
        form = await request.form()
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(status_code=400, detail="No file part named 'file'")
            destination = directory / f"{uuid.uuid4().hex}.upload"
            sha256, size = await run_in_threadpool(copy_and_hash, upload.file, destination)
        finally:
            await form.close()
        return {"name": destination.name, "size": size, "sha256": sha256}

    return app


def main() -> None:
    args = parse_peer_args(__doc__.splitlines()[0])
    uvicorn.run(make_app(args.directory), host="127.0.0.1", port=args.port,
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
