"""One tus request body into an upload session: PATCH, and POST with data.

Owns what happens to the bytes of a single request: the idle timeout and the byte
ceiling (the upload's length), the optional `Upload-Checksum` of the body (460 and the
bytes discarded on a mismatch), the stale-request takeover, and what is kept when the
request ends early: every byte that arrived is flushed and so acknowledged by the next
HEAD (a body with a checksum is discarded instead: it can no longer be verified). An
upload found to be a refused type, or over the size limit without a declared length, is
deleted: it can never complete.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import Executor

from aiohttp import web

from ..appkeys import CONFIG, HASH_EXECUTOR
from ..body import BodyReader
from ..errors import ChecksumMismatch, FileTooLarge, UnsupportedFileType
from ..uploads.session import UploadSession

DIGEST_BATCH = 2 << 20


class _BodyDigest:
    """The checksum of a request body, hashed off the loop in ~2 MiB batches."""

    def __init__(self, algorithm: str, executor: Executor) -> None:
        self._hash = hashlib.new(algorithm)
        self._executor = executor
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def update(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= DIGEST_BATCH:
            await self._drain()

    async def _drain(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        await asyncio.get_running_loop().run_in_executor(self._executor, _update_all, self._hash, batch)

    async def digest(self) -> bytes:
        await self._drain()
        return self._hash.digest()


def _update_all(digest: hashlib._Hash, pieces: list[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


async def receive(request: web.Request, session: UploadSession, checksum: tuple[str, bytes] | None) -> int:
    """Append the request body to the upload; the durable offset once it is all stored."""
    config = request.app[CONFIG]
    start = session.offset
    length = session.info.length
    ceiling = (length if length is not None else config.limits.max_file_size) - start
    reader = BodyReader(request.content, idle_timeout=config.limits.idle_timeout, max_bytes=ceiling)

    def let_go() -> None:
        reader.stop_if_silent(config.limits.stale_after)

    session.on_release_request(let_go)
    if request.content_length:
        session.expect_until(start + min(request.content_length, ceiling))
    digest = _BodyDigest(checksum[0], request.app[HASH_EXECUTOR]) if checksum else None
    try:
        async with reader:
            while (chunk := await reader.read()) is not None:
                if digest is not None:
                    await digest.update(chunk)
                await session.append(chunk)
    except UnsupportedFileType:
        await session.terminate()  # a refused upload is deleted
        raise
    except FileTooLarge:
        if length is None:
            # Without a declared length the ceiling is the file size limit itself: the
            # file is too large and can never complete, so it goes like a refused type.
            await asyncio.shield(session.terminate())
        else:
            # The body overshot the declared Upload-Length: the request is at fault, not
            # the bytes stored before it.
            await asyncio.shield(_keep(session, start, keep=digest is None))
        raise
    except BaseException:
        # Cut off, timed out, taken over, over the limit, or shutting down: keep what
        # arrived. Shielded, so a cancelled request still stores its bytes.
        await asyncio.shield(_keep(session, start, keep=digest is None))
        raise
    if checksum is not None and digest is not None and await digest.digest() != checksum[1]:
        await session.discard_since(start)
        raise ChecksumMismatch(f"the {checksum[0]} checksum of the body does not match Upload-Checksum; "
                               f"the bytes were discarded, send them again from offset {start}",
                               headers={"Upload-Offset": str(start)})
    # Shielded: the bytes are on disk; a cancel now must not skip recording their hash state.
    return await asyncio.shield(session.flush())


async def _keep(session: UploadSession, start: int, *, keep: bool) -> None:
    try:
        if keep:
            await session.flush()
        else:
            await session.discard_since(start)
    except UnsupportedFileType:
        await session.terminate()
