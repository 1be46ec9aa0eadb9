"""Peer "seed pattern": the recipe uploadsrv was started from, on aiohttp.

The research notes in shared/seeds/ recommend streaming-form-data's parser fed chunk by
chunk with `data_received` (sync), a `FileTarget` (with `MaxSizeValidator(5 GiB)`), a
SHA-256 target, and a puremagic check of the file's first 2048 bytes "after receiving
the first chunk", raising an HTTP error for an unknown type. All of it runs on the event
loop, exactly as the recipe has it. Two honest repairs, so that it does what the notes
mean rather than what their sketch does by accident:
- the notes check `chunk[:2048]` of the *request body*, which starts with the multipart
  boundary, not the file; here a third target on the same field keeps the file part's
  first 2048 bytes, and the check runs on those (several targets on one field is the
  library's own idiom);
- the refusal is 415 as in the contract, not the sketch's 400.

Standalone: python3 seed_pattern.py --port P --dir D (binds 127.0.0.1 only).
"""

from __future__ import annotations

import uuid

import puremagic
from aiohttp import web
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import BaseTarget, FileTarget, SHA256Target
from streaming_form_data.validators import MaxSizeValidator
from aiohttp_peer import DIRECTORY, serve

CHUNK_SIZE = 1024 * 1024  # the notes' CHUNK_SIZE
MAX_FILE_SIZE = 5 * 1024 * 1024 * 1024
HEAD_SIZE = 2048
ALLOWED_MAGIC_TYPES = {".mp3", ".wav", ".mp4", ".m4a", ".flac", ".ogg", ".webm", ".mov"}


class HeadTarget(BaseTarget):
    """Keeps the first HEAD_SIZE bytes of the part, for the magic-bytes check."""

    def __init__(self) -> None:
        super().__init__()
        self.head = b""

    def on_data_received(self, chunk: bytes) -> None:
        if len(self.head) < HEAD_SIZE:
            self.head += chunk[: HEAD_SIZE - len(self.head)]


def validate_magic_bytes(file_header: bytes) -> str | None:
    """The notes' Pattern 2: the first allowed extension puremagic reports, else None."""
    try:
        results = puremagic.magic_string(file_header)
    except puremagic.PureError:
        return None
    for result in results:
        extension = result.extension.lower()
        if extension in ALLOWED_MAGIC_TYPES:
            return extension
    return None


async def upload(request: web.Request) -> web.Response:
    parser = StreamingFormDataParser(headers=request.headers)
    path = request.app[DIRECTORY] / f"{uuid.uuid4().hex}.upload"
    file_target = FileTarget(str(path), validator=MaxSizeValidator(MAX_FILE_SIZE))
    hash_target = SHA256Target()
    head_target = HeadTarget()
    for target in (file_target, hash_target, head_target):
        parser.register("file", target)

    file_type: str | None = None
    try:
        async for chunk in request.content.iter_chunked(CHUNK_SIZE):
            parser.data_received(chunk)
            if file_type is None and len(head_target.head) >= HEAD_SIZE:
                file_type = validate_magic_bytes(head_target.head)
                if file_type is None:
                    raise web.HTTPUnsupportedMediaType(text="Invalid file format")
        if not file_target._finished or not head_target.head:  # the library's only end signal
            raise web.HTTPBadRequest(text="No complete file part")
        if file_type is None:
            # A file shorter than HEAD_SIZE is checked once the body has ended.
            file_type = validate_magic_bytes(head_target.head)
            if file_type is None:
                raise web.HTTPUnsupportedMediaType(text="Invalid file format")
    except BaseException:
        if file_target._fd is not None:
            file_target._fd.close()
        path.unlink(missing_ok=True)
        raise

    return web.json_response(
        {"name": path.name, "size": path.stat().st_size, "sha256": hash_target.value,
         "type": file_type.lstrip(".")},
        status=201,
    )


def main() -> None:
    serve(__doc__.splitlines()[0], upload)


if __name__ == "__main__":
    main()
