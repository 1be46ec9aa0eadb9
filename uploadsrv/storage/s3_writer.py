"""The S3 backend's `UploadWriter`: an upload's new bytes, spooled into parts and sent.

    open     the recorded state is read (the offset at open is the upload's stored
             offset) and the parts S3 holds past the recorded ones are listed; a small
             base and the tail are loaded into the spool (their bytes start the next
             part); a large base is copied into a new multipart upload on the S3 side
    write    bytes go to the current spool file; a full one (`part_size`, or the size
             `expect_until` planned for it) is sent as the next part in the background,
             at most MAX_IN_FLIGHT per writer
    flush    every part sent; the rest goes up as a part (5 MiB or more) or as a new
             tail object; then the state, which makes them the upload's bytes, is written
             and its parts checked against ListParts. Only now do they count: a writer that
             dies before its flush leaves parts the state does not record, and they are
             overwritten by the next writer or left out of the completion.
    close    waits for parts still being sent (none may land after the next writer
             starts), then frees the spool

It must not touch the info object (save_info does) nor decide anything about files.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from .s3_bucket import Bucket
from .s3_layout import MAX_PARTS, MIN_PART, Layout, Part, UploadState, copy_ranges, part_sizes
from .s3_spool import Spool, SpoolFile

log = logging.getLogger(__name__)
# Four parts on the wire while the next one fills: with the engine on CPUs of its own,
# two kept it busy 82 % of the time and four 96 % (boto3 runs ten); a writer holds at most
# 5 spool slots.
MAX_IN_FLIGHT = 4


class S3Writer:
    """Appends to one upload; calls never overlap (the contract's rule)."""

    def __init__(self, bucket: Bucket, layout: Layout, spool: Spool, upload_id: str, state: UploadState) -> None:
        self._bucket = bucket
        self._layout = layout
        self._spool = spool
        self._id = upload_id
        self._key = layout.content(upload_id)
        self._durable = state  # the state last recorded in S3
        self._parts: list[Part] = list(state.parts)  # recorded, and sent by this writer since
        self._number = state.next_part
        self._base = state.base
        self._current: SpoolFile | None = None  # holds a spool slot while set
        self._sending: list[asyncio.Future[Part]] = []
        self._offset = state.size
        self._plan: list[int] = []  # sizes of the next parts, cut to fit the request (`expect_until`)
        self._dirty = False
        self._broken = False
        self._closed = False

    @classmethod
    async def open(cls, bucket: Bucket, layout: Layout, spool: Spool, upload_id: str) -> S3Writer:
        state = UploadState.from_json(await bucket.get_json(
            layout.state(upload_id), f"no upload in progress with id {upload_id!r}"))
        writer = cls(bucket, layout, spool, upload_id, state)
        if state.multipart is not None:
            # Only past the recorded parts, which were checked when recorded and are
            # checked again by `upload_offset` and before completion: a PATCH pays for
            # none of the listing of those, which grows with the upload.
            listed = await bucket.list_parts(layout.content(upload_id), state.multipart, after=state.next_part - 1)
            # Part numbers are never used twice: a part sent again under its number may
            # be listed with its old ETag (SeaweedFS 4.48), and a dead writer's parts
            # past the recorded ones hold numbers of their own.
            writer._number = max([state.next_part, *(number + 1 for number in listed)])
        try:
            await writer._load()
        except BaseException:
            await asyncio.shield(writer.close())
            raise
        return writer

    @property
    def offset(self) -> int:
        return self._offset

    def expect_until(self, offset: int) -> None:
        """The request should take the upload to `offset`: its bytes (from the current
        spool file's start) are cut into parts that fit them (`part_sizes`)."""
        spooled = self._current.size if self._current is not None else 0
        plan = part_sizes(offset - (self._offset - spooled), self._spool.part_size)
        self._plan = plan if plan and plan[0] > spooled else []

    async def _load(self) -> None:
        state = self._durable
        if state.base >= MIN_PART:
            # The content object holds the start (it was assembled to be read back): it
            # becomes the first parts of a new multipart upload, copied by the engine.
            await self._ensure_multipart()
            multipart = self._durable.multipart
            assert multipart is not None and not self._parts
            for number, (start, end) in enumerate(copy_ranges(state.base), start=self._number):
                self._parts.append(await self._bucket.copy_part(self._key, multipart, number, self._key, start, end))
            self._number, self._base = self._parts[-1].number + 1, 0
            await self._record(replace(self._durable, parts=tuple(self._parts), base=0))
        elif state.base:
            # A small base joins the next part through the spool (a copied part must be 5 MiB+).
            await self._preload(self._key, state.base)
            self._base = 0
        if state.tail_size:
            await self._preload(self._layout.tail(self._id, state.tail_seq), state.tail_size)

    async def _preload(self, key: str, size: int) -> None:
        """Bytes already stored (and counted in the offset) that the next part starts with."""
        async for chunk in self._bucket.read(key, 0, size, f"upload {self._id!r} lost its bytes at {key!r}"):
            await self._spool_bytes([chunk])

    # -- writing ------------------------------------------------------------------------

    async def write(self, pieces: Sequence[bytes]) -> None:
        assert not self._closed, "write after close"
        size = sum(len(piece) for piece in pieces)
        if not size:
            return
        self._dirty = True
        try:
            await self._spool_bytes(pieces)
        except BaseException:
            # Some of the pieces may be spooled: this writer records nothing any more.
            self._broken = True
            raise
        self._offset += size

    async def _spool_bytes(self, pieces: Sequence[bytes]) -> None:
        """Append to the current spool file, sending each one that reaches its part's size
        (the plan's, else `part_size`)."""
        batch: list[memoryview] = []
        batched = 0
        for piece in pieces:
            view = memoryview(piece)
            while view:
                if self._current is None:
                    self._current = await self._spool.take(self._id)
                size = self._plan[0] if self._plan else self._spool.part_size
                room = size - self._current.size - batched
                batch.append(view[:room])
                batched += len(batch[-1])
                view = view[room:]
                if self._current.size + batched >= size:
                    await self._spool.run(self._current.append, batch)
                    batch, batched = [], 0
                    await self._send_current()
        if batch:
            assert self._current is not None
            await self._spool.run(self._current.append, batch)

    async def _send_current(self) -> None:
        """Hand the current spool file (and its slot) to a part upload of its own."""
        assert self._current is not None
        await self._ensure_multipart()
        while len(self._sending) >= MAX_IN_FLIGHT:
            await self._settle(1)
        if self._number > MAX_PARTS:
            raise RuntimeError(f"upload {self._id!r} needs more than {MAX_PARTS} parts; raise storage.s3.part_size")
        spooled, self._current = self._current, None
        number, self._number = self._number, self._number + 1
        if self._plan:
            self._plan.pop(0)
        self._sending.append(asyncio.ensure_future(self._send(spooled, number)))

    async def _send(self, spooled: SpoolFile, number: int) -> Part:
        try:
            multipart = self._durable.multipart
            assert multipart is not None
            body = await self._spool.run(spooled.reader)
            try:
                return await self._bucket.upload_part(self._key, multipart, number, body, spooled.size)
            finally:
                await self._spool.run(body.close)
        finally:
            await self._spool.give_back(spooled)

    async def _settle(self, count: int | None = None) -> None:
        """Wait for the oldest `count` part uploads (all when None), keeping their parts in order."""
        while self._sending and (count is None or count > 0):
            part = await self._sending[0]
            self._sending.pop(0)
            self._parts.append(part)
            count = None if count is None else count - 1

    async def _ensure_multipart(self) -> None:
        if self._durable.multipart is None:
            multipart = await self._bucket.start_multipart(self._key)
            # Recorded at once, so a crash leaves no multipart upload that nothing names.
            await self._record(replace(self._durable, multipart=multipart))

    async def _record(self, state: UploadState) -> None:
        await self._bucket.put_json(self._layout.state(self._id), state.to_json())
        self._durable = state

    # -- flushing -----------------------------------------------------------------------

    async def flush(self) -> int:
        assert not self._closed, "flush after close"
        if self._broken:
            raise RuntimeError(f"upload {self._id!r}: a write failed; its writer can record nothing more")
        await self._settle()
        if not self._dirty and self._base == self._durable.base:
            return self._durable.size
        old = self._durable
        tail_seq, tail_size, seq = 0, 0, old.seq
        rest = self._current.size if self._current is not None else 0
        if rest >= MIN_PART:
            await self._send_current()
            await self._settle()
        elif rest:
            assert self._current is not None
            seq = tail_seq = old.seq + 1
            tail_size = rest
            await self._bucket.put(self._layout.tail(self._id, seq), await self._spool.run(self._current.read_all))
        state = replace(old, parts=tuple(self._parts), base=self._base, tail_seq=tail_seq, tail_size=tail_size,
                        seq=seq)
        if state.parts != old.parts:
            await self._check_parts(state, old)
        await self._record(state)
        self._dirty = False
        if old.tail_seq and old.tail_seq != tail_seq:
            try:
                await self._bucket.delete(self._layout.tail(self._id, old.tail_seq))
            except Exception:  # noqa: BLE001 - an old tail is garbage; the cleanup's terminate removes it
                log.warning("upload %s: could not delete an old tail object", self._id, exc_info=True)
        assert state.size == self._offset, (state.size, self._offset)
        return state.size

    async def _check_parts(self, state: UploadState, old: UploadState) -> None:
        """The parts about to be recorded are in S3 as sent (nothing overwrote one since).
        Only the new ones are listed: the recorded ones were checked when recorded and are
        checked again by `upload_offset` and before completion."""
        assert state.multipart is not None
        new = state.parts[len(old.parts):]
        if state.parts[:len(old.parts)] != old.parts:
            new = state.parts
        after = new[0].number - 1 if new else 0
        listed = await self._bucket.list_parts(self._key, state.multipart, after=after)
        for part in new:
            if listed.get(part.number) != part:
                raise RuntimeError(f"upload {self._id!r}: part {part.number} is not in S3 as sent; "
                                   "another writer changed the upload")

    # -- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sending, self._sending = self._sending, []
        # Not cancelled: a part whose request already reached S3 could still land after
        # the next writer's part of the same number, and replace it.
        await asyncio.gather(*sending, return_exceptions=True)
        if self._current is not None:
            current, self._current = self._current, None
            await self._spool.give_back(current)
