"""Local-disk storage: uploads in `tmp_dir`, completed files and records in `dir`.

Layout: `tmp_dir/<id>.part` holds an upload's bytes (its size is the offset's only
truth) and `tmp_dir/<id>.info` its `UploadInfo`; `dir/<id>.<type>` holds a completed
file and `dir/<id>.json` its record. Both folders must be on one filesystem so that
commit is a rename. Blocking calls run on two executors owned here: bulk writes and
reads on one, small metadata operations (info, records, listings) on the other, so a
`GET /files/{id}/info` never queues behind 64 uploads' batches.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiofiles
import aiofiles.os

from ..errors import InsufficientStorage, NotFound
from ..ids import check_id
from .base import FileRecord, UploadEntry, UploadInfo
from .part_writer import FilePartWriter, disk_full

_T = TypeVar("_T")
PART_SUFFIX = ".part"
INFO_SUFFIX = ".info"
RECORD_SUFFIX = ".json"
# Leftovers of an interrupted write of a record or an info; they live in tmp_dir.
TEMP_SUFFIX = ".tmp"
# Enough threads for several uploads' batches to write at once on 2+ cores, few enough
# that a burst of uploads cannot spawn an unbounded number of writers.
BULK_THREADS = 8
META_THREADS = 4
READ_CHUNK = 1 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    """The async face of a `FilePartWriter`: every call runs on the bulk executor."""

    def __init__(self, part: FilePartWriter, storage: FilesystemStorage) -> None:
        self._part = part
        self._storage = storage

    @property
    def offset(self) -> int:
        return self._part.offset

    def expect_until(self, offset: int) -> None:
        pass  # bytes are written as they come

    async def write(self, pieces: Sequence[bytes]) -> None:
        await self._storage._bulk(self._part.write, pieces)

    async def flush(self) -> int:
        await self._storage._bulk(self._part.sync)
        return self._part.offset

    async def close(self) -> None:
        await self._storage._bulk(self._part.close)


class FilesystemStorage:
    """The `Storage` contract on a local filesystem."""

    def __init__(self, directory: Path, tmp_directory: Path) -> None:
        self._dir = directory
        self._tmp = tmp_directory
        self._bulk_pool = ThreadPoolExecutor(BULK_THREADS, thread_name_prefix="uploadsrv-bulk")
        self._meta_pool = ThreadPoolExecutor(META_THREADS, thread_name_prefix="uploadsrv-meta")

    def prepare(self) -> None:
        """Create both folders (blocking; called once at start-up)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        if self._dir.stat().st_dev != self._tmp.stat().st_dev:
            raise RuntimeError(
                f"storage.tmp_dir ({self._tmp}) must be on the same filesystem as storage.dir ({self._dir})"
            )

    def close(self) -> None:
        """Wait for running jobs and stop the executors (blocking; at shutdown)."""
        self._bulk_pool.shutdown(wait=True)
        self._meta_pool.shutdown(wait=True)

    async def _bulk(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._bulk_pool, function, *args)

    async def _meta(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._meta_pool, function, *args)

    def _part_path(self, upload_id: str) -> Path:
        return self._tmp / f"{check_id(upload_id)}{PART_SUFFIX}"

    def _info_path(self, upload_id: str) -> Path:
        return self._tmp / f"{check_id(upload_id)}{INFO_SUFFIX}"

    def _record_path(self, file_id: str) -> Path:
        return self._dir / f"{check_id(file_id)}{RECORD_SUFFIX}"

    def _content_path(self, record: FileRecord) -> Path:
        return self._dir / f"{check_id(record.id)}.{record.type}"

    async def _write_json(self, data: dict[str, Any], temp: Path, final: Path) -> None:
        """Write a small JSON file so that `final` is either the old or the new one, durably.

        A task of its own, shielded: a request cancelled meanwhile must not leave an open
        handle or a half-written temp behind."""
        await asyncio.shield(asyncio.ensure_future(self._replace_json(data, temp, final)))

    async def _replace_json(self, data: dict[str, Any], temp: Path, final: Path) -> None:
        text = json.dumps(data, ensure_ascii=False, indent=1)
        try:
            async with aiofiles.open(temp, "w", encoding="utf-8", executor=self._meta_pool) as handle:
                await handle.write(text)
                await handle.flush()
                await self._meta(os.fsync, handle.fileno())
            await aiofiles.os.replace(temp, final, executor=self._meta_pool)
            await self._meta(_fsync_dir, final.parent)
        except OSError as error:
            await self._meta(temp.unlink, True)
            if disk_full(error):
                raise InsufficientStorage("the server's disk is full; try again later") from None
            raise

    async def _read_json(self, path: Path, missing: str) -> dict[str, Any]:
        try:
            async with aiofiles.open(path, encoding="utf-8", executor=self._meta_pool) as handle:
                data = json.loads(await handle.read())
        except FileNotFoundError:
            raise NotFound(missing) from None
        if not isinstance(data, dict):
            raise NotFound(missing)
        return data

    # -- uploads in progress ------------------------------------------------------------

    async def create_upload(self, info: UploadInfo) -> None:
        part = self._part_path(info.id)
        await self._meta(lambda: os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)))
        await self.save_info(info)

    async def get_upload(self, upload_id: str) -> UploadInfo:
        data = await self._read_json(self._info_path(upload_id), f"no upload in progress with id {upload_id!r}")
        try:
            return UploadInfo.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise NotFound(f"no upload in progress with id {upload_id!r}") from None

    async def save_info(self, info: UploadInfo) -> None:
        final = self._info_path(info.id)
        await self._write_json(info.to_json(), final.with_name(final.name + TEMP_SUFFIX), final)

    async def upload_offset(self, upload_id: str) -> int:
        return (await self._stat_part(upload_id)).st_size

    async def upload_idle_seconds(self, upload_id: str) -> float:
        return max(0.0, time.time() - (await self._stat_part(upload_id)).st_mtime)

    async def _stat_part(self, upload_id: str) -> os.stat_result:
        try:
            return await self._meta(self._part_path(upload_id).stat)
        except FileNotFoundError:
            raise NotFound(f"no upload in progress with id {upload_id!r}") from None

    async def open_writer(self, upload_id: str) -> _Writer:
        path = self._part_path(upload_id)
        return _Writer(await self._bulk(lambda: FilePartWriter(path, create=False)), self)

    async def truncate(self, upload_id: str, offset: int) -> None:
        await self._bulk(self._truncate, self._part_path(upload_id), offset)

    @staticmethod
    def _truncate(path: Path, offset: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def read_upload(self, upload_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in self._read_range(self._part_path(upload_id), start, end):
            yield chunk

    async def _read_range(self, path: Path, start: int, end: int | None) -> AsyncIterator[bytes]:
        try:
            handle = await self._bulk(open, path, "rb", 0)
        except FileNotFoundError:
            raise NotFound(f"no data for {path.stem!r}") from None
        try:
            position = start
            while end is None or position < end:
                size = READ_CHUNK if end is None else min(READ_CHUNK, end - position)
                chunk = await self._bulk(os.pread, handle.fileno(), size, position)
                if not chunk:
                    break
                position += len(chunk)
                yield chunk
        finally:
            await self._bulk(handle.close)

    async def commit(self, upload_id: str, record: FileRecord) -> None:
        part, content = self._part_path(upload_id), self._content_path(record)
        try:
            # The writer flushed the part; the rename, then the folder, make it durable
            # under its final name before the record can point at it.
            await self._meta(os.rename, part, content)
            await self._meta(_fsync_dir, self._dir)
        except OSError as error:
            if disk_full(error):
                raise InsufficientStorage("the server's disk is full; try again later") from None
            raise
        try:
            temp = self._tmp / f"{record.id}{RECORD_SUFFIX}{TEMP_SUFFIX}"
            await self._write_json(record.to_json(), temp, self._record_path(record.id))
        except BaseException:
            await asyncio.shield(self._meta(content.unlink, True))
            raise
        await self._meta(self._info_path(upload_id).unlink, True)

    async def terminate(self, upload_id: str) -> None:
        await self._meta(self._terminate, upload_id)

    def _terminate(self, upload_id: str) -> None:
        # Info first: an upload without info is a leftover for every reader. Then the
        # bytes, and the temps an interrupted info or record write may have left.
        info = self._info_path(upload_id)
        for path in (info, self._part_path(upload_id), info.with_name(info.name + TEMP_SUFFIX),
                     self._tmp / f"{upload_id}{RECORD_SUFFIX}{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)

    async def list_uploads(self) -> list[UploadEntry]:
        return await self._meta(self._list_uploads)

    def _list_uploads(self) -> list[UploadEntry]:
        now = time.time()
        found: dict[str, dict[str, Any]] = {}
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                upload_id, dot, suffix = entry.name.partition(".")
                if not dot:
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                item = found.setdefault(upload_id, {"size": 0, "mtime": 0.0, "info": False, "data": False})
                item["size"] += stat.st_size
                item["mtime"] = max(item["mtime"], stat.st_mtime)
                item["info"] |= "." + suffix == INFO_SUFFIX
                item["data"] |= "." + suffix == PART_SUFFIX
        return [
            UploadEntry(upload_id, item["size"], max(0.0, now - item["mtime"]), item["info"], item["data"])
            for upload_id, item in found.items()
        ]

    # -- completed files ----------------------------------------------------------------

    async def get(self, file_id: str) -> FileRecord:
        data = await self._read_json(self._record_path(file_id), f"no file with id {file_id!r}")
        try:
            return FileRecord.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise NotFound(f"no file with id {file_id!r}") from None

    async def read_file(self, record: FileRecord, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in self._read_range(self._content_path(record), start, end):
            yield chunk

    async def delete(self, file_id: str) -> None:
        record = await self.get(file_id)
        await self._meta(self._delete, record)

    def _delete(self, record: FileRecord) -> None:
        # Record first: once it is gone the file is gone for every reader.
        self._record_path(record.id).unlink(missing_ok=True)
        self._content_path(record).unlink(missing_ok=True)
        _fsync_dir(self._dir)

    async def list_files(self, limit: int, cursor: str | None) -> tuple[list[FileRecord], str | None]:
        return await self._meta(self._list, limit, _decode_cursor(cursor))

    def _list(self, limit: int, after: tuple[int, str] | None) -> tuple[list[FileRecord], str | None]:
        # A record's mtime is its commit time; (mtime, id) orders files newest first
        # without reading every record, and stays stable when files are added.
        keys: list[tuple[int, str]] = []
        with os.scandir(self._dir) as entries:
            for entry in entries:
                if entry.name.endswith(RECORD_SUFFIX) and not entry.name.startswith("."):
                    keys.append((entry.stat().st_mtime_ns, entry.name[: -len(RECORD_SUFFIX)]))
        keys.sort(reverse=True)
        if after is not None:
            keys = [key for key in keys if key < after]
        records: list[FileRecord] = []
        last_key: tuple[int, str] | None = None
        for key in keys:
            if len(records) == limit:
                return records, _encode_cursor(last_key) if last_key else None
            try:
                path = self._dir / f"{key[1]}{RECORD_SUFFIX}"
                records.append(FileRecord.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # deleted meanwhile, or not one of ours
            last_key = key
        return records, None

    async def free_space(self) -> int:
        return (await self._meta(shutil.disk_usage, self._dir)).free


def _encode_cursor(key: tuple[int, str]) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        mtime, file_id = raw.split(":", 1)
        return int(mtime), check_id(file_id)
    except (ValueError, NotFound):
        raise ValueError("cursor is not one this server gave out") from None
