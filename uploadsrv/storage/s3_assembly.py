"""Turning an upload's parts and tail into one object, and cutting an upload short.

S3 cannot read, shorten or renumber the parts of a multipart upload in progress. So:

    assemble  completes the multipart upload at the content key, the tail copied in by
              the engine as its last part (UploadPartCopy), or joins base and tail; the
              upload's bytes are then that one readable object (state: base = size).
              Commit ends with it; a read that touches parts triggers it early.
    truncate  inside the tail: a shorter tail object. Inside base or parts (not what a
              checksum mismatch needs: parts sent by the failed request were never
              recorded, so its start is the recorded end): assemble, then start again
              from the object's first bytes (copied parts, or a tail when short).
    recover   an assembly cut off after CompleteMultipartUpload but before its state was
              written leaves a state naming a multipart upload that is gone; when the
              content object has exactly the recorded size, that is the assembled upload.

Each step writes the new state only once the objects it names exist. Callers hold the
upload's lock; this module knows nothing of writers or files.
"""

from __future__ import annotations

import logging

from ..errors import NotFound
from .s3_bucket import Bucket
from .s3_layout import MIN_PART, Layout, UploadState, copy_ranges

log = logging.getLogger(__name__)


class Assembly:
    """The multi-step operations on one upload's objects."""

    def __init__(self, bucket: Bucket, layout: Layout) -> None:
        self._bucket = bucket
        self._layout = layout

    async def _record(self, upload_id: str, old: UploadState, new: UploadState) -> UploadState:
        await self._bucket.put_json(self._layout.state(upload_id), new.to_json())
        if old.tail_seq and old.tail_seq != new.tail_seq:
            try:
                await self._bucket.delete(self._layout.tail(upload_id, old.tail_seq))
            except Exception:  # noqa: BLE001 - garbage the cleanup's terminate removes
                log.warning("upload %s: could not delete an old tail object", upload_id, exc_info=True)
        return new

    async def _read(self, upload_id: str, key: str, size: int) -> bytes:
        missing = f"upload {upload_id!r} lost its bytes at {key!r}"
        return b"".join([chunk async for chunk in self._bucket.read(key, 0, size, missing)])

    async def assemble(self, upload_id: str, state: UploadState) -> UploadState:
        """Make the object at the content key hold exactly the upload's bytes; the new state."""
        key = self._layout.content(upload_id)
        tail = self._layout.tail(upload_id, state.tail_seq)
        if state.parts:
            assert state.multipart is not None
            parts = list(state.parts)
            # The file is the recorded parts as they were sent, whatever the engine's
            # completion checks.
            listed = await self._bucket.list_parts(key, state.multipart)
            state.check_parts(upload_id, listed)
            if state.tail_size:
                # A number no part ever had (see S3Writer.open).
                number = max([state.next_part, *(number + 1 for number in listed)])
                parts.append(await self._bucket.copy_part(key, state.multipart, number, tail, 0, state.tail_size))
            await self._bucket.complete(key, state.multipart, parts)
            return await self._record(upload_id, state, UploadState(base=state.size, seq=state.seq))
        if state.multipart is not None:
            await self._bucket.abort(key, state.multipart)  # started, but no part was ever recorded
        if state.base >= MIN_PART and state.tail_size:
            joined = await self._bucket.start_multipart(key)
            parts = [await self._bucket.copy_part(key, joined, number, key, start, end)
                     for number, (start, end) in enumerate(copy_ranges(state.base), start=1)]
            parts.append(await self._bucket.copy_part(key, joined, len(parts) + 1, tail, 0, state.tail_size))
            await self._bucket.complete(key, joined, parts)
        elif state.base and state.tail_size:
            body = await self._read(upload_id, key, state.base) + await self._read(upload_id, tail, state.tail_size)
            await self._bucket.put(key, body)
        elif state.tail_size:
            await self._bucket.copy(tail, key)
        elif not state.base:
            await self._bucket.put(key, b"")
        return await self._record(upload_id, state, UploadState(base=state.size, seq=state.seq))

    async def truncate(self, upload_id: str, state: UploadState, offset: int) -> UploadState:
        """Drop the bytes past `offset`; the new state."""
        if offset >= state.size:
            return state
        tail_start = state.base + state.parts_size
        if offset >= tail_start:
            keep = offset - tail_start
            if not keep:
                return await self._record(upload_id, state, UploadState(
                    state.multipart, state.parts, state.base, 0, 0, state.seq))
            seq = state.seq + 1
            body = await self._read(upload_id, self._layout.tail(upload_id, state.tail_seq), keep)
            await self._bucket.put(self._layout.tail(upload_id, seq), body)
            return await self._record(upload_id, state, UploadState(
                state.multipart, state.parts, state.base, seq, keep, seq))
        state = await self.assemble(upload_id, state)
        key = self._layout.content(upload_id)
        if offset >= MIN_PART:
            multipart = await self._bucket.start_multipart(key)
            parts = [await self._bucket.copy_part(key, multipart, number, key, start, end)
                     for number, (start, end) in enumerate(copy_ranges(offset), start=1)]
            return await self._record(upload_id, state, UploadState(multipart, tuple(parts), seq=state.seq))
        seq = state.seq + 1
        if offset:
            await self._bucket.put(self._layout.tail(upload_id, seq), await self._read(upload_id, key, offset))
        return await self._record(upload_id, state, UploadState(
            tail_seq=seq if offset else 0, tail_size=offset, seq=seq))

    async def recover(self, upload_id: str, state: UploadState) -> UploadState:
        """The state of an upload whose recorded multipart upload is gone; NotFound when
        its bytes are not to be found whole at the content key."""
        key = self._layout.content(upload_id)
        if state.multipart is not None and state.parts:
            still = [multipart for found, multipart, _ in await self._bucket.multiparts(key) if found == key]
            if state.multipart not in still and await self._bucket.size(key) == state.size:
                log.warning("upload %s: recovered an assembly cut off before it was recorded", upload_id)
                return await self._record(upload_id, state, UploadState(base=state.size, seq=state.seq))
        raise NotFound(f"upload {upload_id!r} lost its bytes in S3; start it again")
