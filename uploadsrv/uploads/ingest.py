"""The ingest pipeline: one file's bytes, in one pass, counted, typed, hashed and written.

Owns the order of work for every byte of an upload, whichever protocol brought it:
count (size limit) -> sniff the type from the head before writing anything -> SHA-256
and append, batched. It must not block the event loop: the loop only collects pieces;
each ~2 MiB batch is hashed on a worker thread while storage writes it, and at most one
batch per upload is in flight, so a slow disk slows the socket reads (TCP backpressure)
instead of growing memory.

A resumable upload's bytes arrive over several requests: `flush()` makes everything so
far durable even while the type is still undecided (a 5-byte PATCH is stored, not
refused), and a later request resumes with the stored size, the saved hash state and
the head read back from storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..errors import FileTooLarge, MissingFile, UnsupportedFileType, format_size
from ..media_types import MAX_SNIFF_BYTES, Detected, MediaType, NeedMore, Rejected, detect
from ..storage import UploadWriter
from .hashstate import ResumableSha256

# curl -F of 1 GiB on the 2-core machine, 6 interleaved pairs: 1 MiB batches median
# 487 MB/s, 2 MiB 511 MB/s (fewer hand-offs to the worker). Memory per upload stays
# near 2 batches (pending and in flight) plus the part's 1 MiB stage.
BATCH_BYTES = 2 << 20
# Socket reads can be as small as 53 bytes; cap the pieces a batch collects.
BATCH_PIECES = 512


@dataclass(frozen=True)
class IngestResult:
    size: int
    sha256: str
    media: MediaType


class Ingest:
    """Feeds one file's bytes through the pipeline into an upload's writer."""

    def __init__(
        self,
        writer: UploadWriter,
        executor: Executor,
        *,
        max_size: int,
        allowed: Collection[str],
        stored: int = 0,
        hasher: ResumableSha256 | None = None,
        media: MediaType | None = None,
        head: bytes = b"",
        checked: bool = True,
    ) -> None:
        """`stored` bytes are in storage already and `hasher` has hashed them; while the
        type is undecided `head` holds them all (it is read back from storage).

        `checked=False` takes bytes that are not a file of their own (a tus partial
        upload, checked as part of its final upload): no type, no hash."""
        self._writer = writer
        self._executor = executor
        self._max_size = max_size
        self._allowed = allowed
        self._loop = asyncio.get_running_loop()
        self.size = stored
        self._stored_head = stored if media is None else 0
        self.hasher = hasher if hasher is not None else ResumableSha256()
        self.media = media
        self._head = bytearray(head)
        self._head_needed = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._in_flight: tuple[asyncio.Future[Any], ...] = ()
        self._checked = checked
        if media is None and len(self._head) >= MAX_SNIFF_BYTES:
            self._sniff(at_end=False)

    async def feed(self, data: bytes) -> None:
        """Take the next bytes of the file; raises 413/415 as soon as they say so."""
        if not data:
            return
        self.size += len(data)
        if self.size > self._max_size:
            raise FileTooLarge(f"the file is larger than the limit of {format_size(self._max_size)}")
        if self.media is None and self._checked:
            self._head += data
            if len(self._head) >= self._head_needed:
                self._sniff(at_end=False)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BATCH_BYTES or len(self._pending) >= BATCH_PIECES:
            await self._submit()

    def _sniff(self, *, at_end: bool) -> None:
        verdict = detect(bytes(self._head), at_end=at_end)
        if isinstance(verdict, NeedMore):
            self._head_needed = verdict.total
            return
        if isinstance(verdict, Rejected):
            raise UnsupportedFileType(
                f"the file is not an accepted audio or video type ({verdict.reason}); "
                f"accepted: {', '.join(self._allowed)}"
            )
        assert isinstance(verdict, Detected)
        if verdict.media.name not in self._allowed:
            raise UnsupportedFileType(
                f"the file is {verdict.media.name}, which this server does not accept; "
                f"accepted: {', '.join(self._allowed)}"
            )
        self.media = verdict.media
        self._queue_head()
        self._head = bytearray()

    def _queue_head(self) -> None:
        """Queue the head's bytes that are not in storage yet (they are written only now)."""
        unstored = bytes(self._head[self._stored_head :])
        self._stored_head = len(self._head)
        if unstored:
            self._pending.append(unstored)
            self._pending_bytes += len(unstored)

    async def _submit(self) -> None:
        await self._settle()
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        # Hash and write the same batch on two threads at once: each releases the GIL
        # for its whole length, so the disk's wait overlaps the hash's CPU.
        writing = asyncio.ensure_future(self._writer.write(batch))
        if not self._checked:
            self._in_flight = (writing,)
            return
        self._in_flight = (self._loop.run_in_executor(self._executor, self.hasher.update_all, batch), writing)

    async def _settle(self) -> None:
        """Wait for the batch in flight; if this wait is cancelled, the batch still finishes."""
        if not self._in_flight:
            return
        # asyncio.wait never cancels what it waits for: a cancelled request must not
        # leave a thread writing to a part that close() is about to release.
        await asyncio.wait(self._in_flight)
        jobs, self._in_flight = self._in_flight, ()
        for job in jobs:
            job.result()

    async def flush(self, hashed: Callable[[], Awaitable[None]] | None = None) -> int:
        """Write everything received so far, the undecided head included, durably; the offset.

        `hashed()` runs once every byte is hashed, alongside the fsync rather than after
        it: a resumable upload's PATCH waits for both, and each is a few milliseconds."""
        if self.media is None and self._checked:
            self._queue_head()
        if self._pending:
            await self._submit()
        jobs = self._in_flight
        hashing = jobs[0] if len(jobs) == 2 else None
        writing = jobs[-1] if jobs else None
        # Tracked like a batch: close() must not release the writer while it syncs.
        flushing = asyncio.ensure_future(self._sync_after(writing))
        after = asyncio.ensure_future(self._after(hashing, hashed))
        self._in_flight = (flushing, after)
        await self._settle()
        return flushing.result()

    async def _sync_after(self, writing: asyncio.Future[None] | None) -> int:
        if writing is not None:
            await writing
        return await self._writer.flush()

    @staticmethod
    async def _after(hashing: asyncio.Future[None] | None, hashed: Callable[[], Awaitable[None]] | None) -> None:
        if hashing is not None:
            await hashing
        if hashed is not None:
            await hashed()

    async def finish(self) -> IngestResult:
        """The whole file has arrived: decide its type if still open, flush, and report."""
        if self.media is None:
            if self.size == 0:
                raise MissingFile("the file is empty; choose a file with content")
            self._sniff(at_end=True)
            assert self.media is not None
        await self.flush()
        return IngestResult(self.size, self.hasher.hexdigest(), self.media)

    def expect_until(self, offset: int) -> None:
        """The request should take the upload to `offset` (the writer's hint)."""
        self._writer.expect_until(offset)

    async def close(self) -> None:
        """Release the writer once no batch is being written to it; safe to cancel."""
        jobs, self._in_flight = self._in_flight, ()

        async def release() -> None:
            # return_exceptions: the request is failing already, a write error adds nothing.
            await asyncio.gather(*jobs, return_exceptions=True)
            await self._writer.close()

        # A task of its own: it releases the writer even if this coroutine is cancelled.
        await asyncio.shield(asyncio.ensure_future(release()))
