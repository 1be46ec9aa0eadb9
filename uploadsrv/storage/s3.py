"""The storage contract on S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph, R2).

An upload is an info object, a state object and an S3 multipart upload at the key its
file will have, plus a tail object for the bytes after the last part (see `s3_layout`
for the keys, `s3_writer` for how bytes become parts). The offset is the state's parts,
checked against ListParts, plus its tail: what S3 holds and a flush recorded.

Reading an upload back (a tus concatenation of partial uploads; a hash rebuild, needed
only when an instance died between a flush and the save of the hash state after it)
cannot read the parts of a multipart upload in progress: S3 has no call for that. When
a read touches them, the upload is *assembled* (`s3_assembly`): the multipart upload is
completed at the content key, and read from there. A complete partial upload costs no
more than that CompleteMultipartUpload; if writing goes on after it, the next writer
copies the assembled bytes into a new multipart upload (UploadPartCopy, done by the
engine: a copy of the bytes so far, without them crossing the network).

Commit assembles the upload (CompleteMultipartUpload), writes the index marker, then
the record (last: from then on the file exists), then removes the upload's objects.
Locking is the caller's (`uploads.locks`), as in every backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from aiobotocore.session import AioSession

from ..errors import NotFound
from .base import FileRecord, UploadEntry, UploadInfo
from .s3_assembly import Assembly
from .s3_bucket import Bucket, Credentials
from .s3_layout import MIN_PART, Layout, UploadState, decode_cursor, encode_cursor
from .s3_spool import Spool
from .s3_writer import S3Writer

log = logging.getLogger(__name__)
# S3 has no free space to ask about; admission's min_free_space check always passes.
UNLIMITED = 1 << 60
RECORD_FETCHES = 16  # records read at once for one listing page


class S3Storage:
    """The `Storage` contract on one bucket, under one key prefix."""

    def __init__(self, *, bucket: str, endpoint: str, region: str, credentials: Credentials, prefix: str,
                 spool_dir: Path, part_size: int, spool_budget: int, session: AioSession | None = None) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's smallest part)")
        self.bucket = Bucket(bucket, endpoint=endpoint, region=region, credentials=credentials, session=session)
        self.layout = Layout(prefix)
        self.spool = Spool(spool_dir, part_size=part_size, budget=spool_budget)
        self._assembly = Assembly(self.bucket, self.layout)

    async def start(self) -> None:
        """Check the bucket is reachable and make the spool folder (at start-up)."""
        await self.spool.run(self.spool.prepare)
        await self.bucket.check()

    async def close(self) -> None:
        """Close the client and remove this process's spool folder (at shutdown)."""
        await self.bucket.close()
        await asyncio.get_running_loop().run_in_executor(None, self.spool.close)

    def _missing_upload(self, upload_id: str) -> str:
        return f"no upload in progress with id {upload_id!r}"

    async def _state(self, upload_id: str) -> UploadState:
        data = await self.bucket.get_json(self.layout.state(upload_id), self._missing_upload(upload_id))
        return UploadState.from_json(data)

    async def _put_state(self, upload_id: str, state: UploadState) -> None:
        await self.bucket.put_json(self.layout.state(upload_id), state.to_json())

    # -- uploads in progress ------------------------------------------------------------

    async def create_upload(self, info: UploadInfo) -> None:
        await self._put_state(info.id, UploadState())
        await self.save_info(info)

    async def get_upload(self, upload_id: str) -> UploadInfo:
        data = await self.bucket.get_json(self.layout.info(upload_id), self._missing_upload(upload_id))
        try:
            return UploadInfo.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise NotFound(self._missing_upload(upload_id)) from None

    async def save_info(self, info: UploadInfo) -> None:
        await self.bucket.put_json(self.layout.info(info.id), info.to_json())

    async def upload_offset(self, upload_id: str) -> int:
        state = await self._state(upload_id)
        if state.parts:
            assert state.multipart is not None
            try:
                listed = await self.bucket.list_parts(self.layout.content(upload_id), state.multipart)
            except NotFound:
                return (await self._assembly.recover(upload_id, state)).size
            state.check_parts(upload_id, listed)
        return state.size

    async def upload_idle_seconds(self, upload_id: str) -> float:
        latest: datetime | None = None
        found_state = False
        async for page in self.bucket.pages(self.layout.upload_objects(upload_id)):
            for item in page:
                found_state |= item.key == self.layout.state(upload_id)
                latest = item.modified if latest is None else max(latest, item.modified)
        if not found_state or latest is None:
            raise NotFound(self._missing_upload(upload_id))
        return max(0.0, time.time() - latest.timestamp())

    async def open_writer(self, upload_id: str) -> S3Writer:
        try:
            return await S3Writer.open(self.bucket, self.layout, self.spool, upload_id)
        except NotFound:
            # The multipart upload may have been completed by an assembly cut off before
            # it recorded so; recover that (or raise NotFound again) and open anew.
            await self._assembly.recover(upload_id, await self._state(upload_id))
            return await S3Writer.open(self.bucket, self.layout, self.spool, upload_id)

    async def truncate(self, upload_id: str, offset: int) -> None:
        await self._assembly.truncate(upload_id, await self._state(upload_id), offset)

    async def read_upload(self, upload_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        state = await self._state(upload_id)
        end = state.size if end is None else min(end, state.size)
        if start >= end:
            return
        if state.parts and start < state.base + state.parts_size:
            state = await self._assembly.assemble(upload_id, state)
        missing = self._missing_upload(upload_id)
        if start < state.base:
            async for chunk in self.bucket.read(self.layout.content(upload_id), start, min(end, state.base), missing):
                yield chunk
        tail_start = state.base + state.parts_size
        if end > tail_start:
            async for chunk in self.bucket.read(self.layout.tail(upload_id, state.tail_seq),
                                                max(start, tail_start) - tail_start, end - tail_start, missing):
                yield chunk

    async def commit(self, upload_id: str, record: FileRecord) -> None:
        if record.id != upload_id:
            raise ValueError("the S3 backend keeps a file under its upload's id")
        await self._assembly.assemble(upload_id, await self._state(upload_id))
        index = self.layout.index(record.id, time.time_ns())
        await self.bucket.put(index, b"")
        await self.bucket.put_json(self.layout.record(record.id), {**record.to_json(), "s3_index": index})
        try:
            await self._remove_upload(upload_id, keep_content=True)
        except Exception:  # noqa: BLE001 - the file is committed; leftovers are the cleanup's
            log.warning("upload %s: committed, but its upload objects are left for the cleanup", upload_id,
                        exc_info=True)

    async def terminate(self, upload_id: str) -> None:
        await self.bucket.delete(self.layout.info(upload_id))
        # A committed file of this id (a commit cut off before its clean-up) keeps its content.
        keep = await self.bucket.exists(self.layout.record(upload_id))
        await self._remove_upload(upload_id, keep_content=keep)

    async def _remove_upload(self, upload_id: str, *, keep_content: bool) -> None:
        key = self.layout.content(upload_id)
        for found_key, multipart, _ in await self.bucket.multiparts(key):
            if found_key == key:
                await self.bucket.abort(key, multipart)
        if not keep_content:
            await self.bucket.delete(key)
        keys = [item.key async for page in self.bucket.pages(self.layout.upload_objects(upload_id)) for item in page]
        state = self.layout.state(upload_id)
        # The state last: until it is gone the upload is listed, so the cleanup comes back.
        others = [name for name in keys if name != state]
        if others:
            await self.bucket.delete(*others)
        if state in keys:
            await self.bucket.delete(state)

    async def list_uploads(self) -> list[UploadEntry]:
        now = time.time()
        found: dict[str, dict[str, float | bool | int]] = {}
        async for page in self.bucket.pages(self.layout.uploads):
            for item in page:
                parsed = self.layout.upload_of(item.key)
                if parsed is None:
                    continue
                entry = found.setdefault(parsed[0], {"size": 0, "modified": 0.0, "info": False, "data": False})
                entry["size"] = int(entry["size"]) + item.size
                entry["modified"] = max(float(entry["modified"]), item.modified.timestamp())
                entry["info"] = bool(entry["info"]) or parsed[1] == "info"
                entry["data"] = bool(entry["data"]) or parsed[1] != "info"
        folder = self.layout.content_folder
        for key, _, initiated in await self.bucket.multiparts(folder):
            upload_id = key[len(folder):]
            if upload_id not in found and "/" not in upload_id:
                # A multipart upload no state names: a writer died between creating it and
                # recording it, or a commit was cut off before its clean-up.
                found[upload_id] = {"size": 0, "modified": initiated.timestamp(), "info": False, "data": True}
        return [UploadEntry(upload_id, int(entry["size"]), max(0.0, now - float(entry["modified"])),
                            bool(entry["info"]), bool(entry["data"])) for upload_id, entry in found.items()]

    # -- completed files ----------------------------------------------------------------

    async def get(self, file_id: str) -> FileRecord:
        data = await self.bucket.get_json(self.layout.record(file_id), f"no file with id {file_id!r}")
        try:
            return FileRecord.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise NotFound(f"no file with id {file_id!r}") from None

    async def read_file(self, record: FileRecord, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        end = record.size if end is None else min(end, record.size)
        async for chunk in self.bucket.read(self.layout.content(record.id), start, end,
                                            f"no file with id {record.id!r}"):
            yield chunk

    async def delete(self, file_id: str) -> None:
        data = await self.bucket.get_json(self.layout.record(file_id), f"no file with id {file_id!r}")
        # Record first: once it is gone the file is gone for every reader.
        await self.bucket.delete(self.layout.record(file_id))
        await self.bucket.delete(self.layout.content(file_id))
        index = data.get("s3_index")
        if isinstance(index, str) and self.layout.file_of_index(index) == file_id:
            await self.bucket.delete(index)

    async def list_files(self, limit: int, cursor: str | None) -> tuple[list[FileRecord], str | None]:
        after = decode_cursor(cursor)
        folder = self.layout.index_folder
        records: list[tuple[str, FileRecord]] = []
        async for page in self.bucket.pages(folder, start_after=folder + after if after else "", page=limit + 1):
            names = [item.key[len(folder):] for item in page if self.layout.file_of_index(item.key)]
            for name, record in zip(names, await self._records(names), strict=True):
                if record is None:
                    continue  # deleted meanwhile, or a commit cut off before its record
                if len(records) == limit:
                    return [found for _, found in records], encode_cursor(records[-1][0])
                records.append((name, record))
        return [found for _, found in records], None

    async def _records(self, index_names: list[str]) -> list[FileRecord | None]:
        gate = asyncio.Semaphore(RECORD_FETCHES)

        async def fetch(name: str) -> FileRecord | None:
            async with gate:
                try:
                    return await self.get(name.split("-", 1)[1])
                except NotFound:
                    return None

        return list(await asyncio.gather(*(fetch(name) for name in index_names)))

    async def free_space(self) -> int:
        return UNLIMITED
