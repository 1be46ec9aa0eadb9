"""Local-disk storage: parts in `tmp_dir`, completed files and records in `dir`.

Layout: `tmp_dir/<id>.part` holds an upload in progress (its size is the upload's only
offset truth); `dir/<id>.<type>` holds a completed file and `dir/<id>.json` its record.
Both folders must be on one filesystem so that commit is a rename. Every blocking call
runs on the executor it is given, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import mmap
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from ..errors import InsufficientStorage, NotFound
from .base import FileRecord, PartWriter

_T = TypeVar("_T")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PART_SUFFIX = ".part"
RECORD_SUFFIX = ".json"
# Leftovers of an interrupted record write; they live in tmp_dir, never in dir.
RECORD_TEMP_SUFFIX = ".json.tmp"


def _check_id(upload_id: str) -> str:
    # Ids come from URLs: anything else must never reach a path.
    if not _ID.match(upload_id):
        raise NotFound(f"no file or upload with id {upload_id!r}")
    return upload_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


# O_DIRECT wants file offsets, lengths and buffer addresses on the device's logical block
# size; 4 KiB is a multiple of every common one (512 B and 4 KiB).
DIRECT_ALIGN = 4096
# The aligned buffer bytes pass through on their way to the disk: one per open part.
STAGE_BYTES = 1 << 20


def _open_direct(path: Path) -> int | None:
    """A second descriptor with O_DIRECT, or None where the filesystem refuses it."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError as error:
        if error.errno == errno.EINVAL:
            return None
        raise


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class FilePartWriter:
    """Appends to `tmp_dir/<id>.part`, bypassing the page cache where the filesystem allows.

    Why O_DIRECT: every byte must reach the disk before 201 anyway, and buffered writes
    left a 4 GiB upload's pages in the page cache (those still under writeback cannot be
    dropped), which cost CPU and speed (curl -F 4 GiB, 3 interleaved pairs, together with
    hashing beside the write: 389 -> 588 MB/s, 3.44 -> 2.28 CPU-s/GiB). Bytes go through
    an aligned buffer; fewer than 4 KiB may wait there for the next write, and `sync`
    writes them with the ordinary descriptor.
    """

    def __init__(self, path: Path, *, create: bool, direct: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CLOEXEC
        flags |= (os.O_CREAT | os.O_EXCL) if create else 0
        try:
            self._fd: int | None = os.open(path, flags, 0o640)
        except FileNotFoundError:
            if create:
                raise  # tmp_dir itself is gone: a server fault, not the client's
            raise NotFound(f"no upload in progress at {path.stem!r}") from None
        try:
            self._direct_fd = _open_direct(path) if direct else None
        except OSError:
            os.close(self._fd)
            raise
        # Bytes on disk (the part's size); `_held` more wait in the stage after them.
        self._offset = os.fstat(self._fd).st_size
        self._stage = mmap.mmap(-1, STAGE_BYTES) if self._direct_fd is not None else None
        self._held = 0

    @property
    def direct(self) -> bool:
        return self._direct_fd is not None

    def write(self, pieces: Sequence[bytes]) -> None:
        assert self._fd is not None, "write after close"
        try:
            if self._stage is None:
                self._write_buffered(pieces)
            else:
                for piece in pieces:
                    self._stage_piece(memoryview(piece))
                self._write_stage()
        except OSError as error:
            if _disk_full(error):
                raise InsufficientStorage("the server's disk is full; try again later") from None
            raise

    def _write_buffered(self, pieces: Sequence[bytes]) -> None:
        assert self._fd is not None
        total = sum(len(piece) for piece in pieces)
        _pwrite_all(self._fd, memoryview(b"".join(pieces)), self._offset)
        # Start writeback now and drop what earlier batches left clean, so the fsync
        # before 201 has little left and a 5 GiB upload does not flood the page cache.
        os.posix_fadvise(self._fd, self._offset, total, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(self._fd, 0, self._offset, os.POSIX_FADV_DONTNEED)
        self._offset += total

    def _stage_piece(self, data: memoryview) -> None:
        assert self._stage is not None and self._fd is not None
        while data:
            if not self._held and self._offset % DIRECT_ALIGN:
                # A resumed part may end mid-block: an ordinary write brings it to a
                # block boundary, from where direct writes can take over.
                step = min(len(data), DIRECT_ALIGN - self._offset % DIRECT_ALIGN)
                _pwrite_all(self._fd, data[:step], self._offset)
                self._offset += step
            else:
                step = min(len(data), STAGE_BYTES - self._held)
                self._stage[self._held : self._held + step] = data[:step]
                self._held += step
                if self._held == STAGE_BYTES:
                    self._write_stage()
            data = data[step:]

    def _write_stage(self) -> None:
        assert self._stage is not None and self._direct_fd is not None
        aligned = self._held - self._held % DIRECT_ALIGN
        if not aligned:
            return
        with memoryview(self._stage) as stage:
            _pwrite_all(self._direct_fd, stage[:aligned], self._offset)
        self._offset += aligned
        self._held -= aligned
        self._stage.move(0, aligned, self._held)

    def sync(self) -> None:
        assert self._fd is not None, "sync after close"
        if self._held:
            assert self._stage is not None
            with memoryview(self._stage) as stage:
                _pwrite_all(self._fd, stage[: self._held], self._offset)
            self._offset += self._held
            self._held = 0
        # One fsync per inode covers what both descriptors wrote.
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        if self._stage is not None:
            self._stage.close()
            self._stage = None


class FilesystemStorage:
    """The `Storage` contract on a local filesystem."""

    def __init__(self, directory: Path, tmp_directory: Path, executor: Executor) -> None:
        self._dir = directory
        self._tmp = tmp_directory
        self._executor = executor

    def prepare(self) -> None:
        """Create both folders (blocking; called once at start-up)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        if self._dir.stat().st_dev != self._tmp.stat().st_dev:
            raise RuntimeError(
                f"storage.tmp_dir ({self._tmp}) must be on the same filesystem as storage.dir ({self._dir})"
            )

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _part_path(self, upload_id: str) -> Path:
        return self._tmp / f"{_check_id(upload_id)}{PART_SUFFIX}"

    def _record_path(self, file_id: str) -> Path:
        return self._dir / f"{_check_id(file_id)}{RECORD_SUFFIX}"

    def content_path(self, record: FileRecord) -> Path:
        return self._dir / f"{_check_id(record.id)}.{record.type}"

    async def create_part(self, upload_id: str) -> PartWriter:
        return await self._run(lambda: FilePartWriter(self._part_path(upload_id), create=True))

    async def open_part(self, upload_id: str) -> PartWriter:
        return await self._run(lambda: FilePartWriter(self._part_path(upload_id), create=False))

    async def part_size(self, upload_id: str) -> int:
        path = self._part_path(upload_id)
        try:
            return (await self._run(path.stat)).st_size
        except FileNotFoundError:
            raise NotFound(f"no upload in progress with id {upload_id!r}") from None

    async def discard_part(self, upload_id: str) -> None:
        await self._run(self._part_path(upload_id).unlink, True)

    async def commit(self, record: FileRecord) -> None:
        await self._run(self._commit, record)

    def _commit(self, record: FileRecord) -> None:
        part = self._part_path(record.id)
        content = self.content_path(record)
        temp_record = self._tmp / f"{record.id}{RECORD_TEMP_SUFFIX}"
        try:
            # The part was synced by its writer; the rename, then the folder, make it
            # durable under its final name before the record can point at it.
            os.rename(part, content)
            _fsync_dir(self._dir)
            with open(temp_record, "w", encoding="utf-8") as handle:
                json.dump(record.to_json(), handle, ensure_ascii=False, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temp_record, self._record_path(record.id))
            _fsync_dir(self._dir)
        except OSError as error:
            temp_record.unlink(missing_ok=True)
            content.unlink(missing_ok=True)
            if _disk_full(error):
                raise InsufficientStorage("the server's disk is full; try again later") from None
            raise

    async def get(self, file_id: str) -> FileRecord:
        return await self._run(self._read_record, self._record_path(file_id))

    def _read_record(self, path: Path) -> FileRecord:
        try:
            return FileRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise NotFound(f"no file with id {path.stem!r}") from None

    async def delete(self, file_id: str) -> None:
        record = await self.get(file_id)
        await self._run(self._delete, record)

    def _delete(self, record: FileRecord) -> None:
        # Record first: once it is gone the file is gone for every reader.
        self._record_path(record.id).unlink(missing_ok=True)
        self.content_path(record).unlink(missing_ok=True)
        _fsync_dir(self._dir)

    async def list_files(self, limit: int, cursor: str | None) -> tuple[list[FileRecord], str | None]:
        return await self._run(self._list, limit, _decode_cursor(cursor))

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
                records.append(self._read_record(self._dir / f"{key[1]}{RECORD_SUFFIX}"))
            except (NotFound, ValueError, KeyError):
                continue  # deleted meanwhile, or not one of ours
            last_key = key
        return records, None

    async def purge_stale_parts(self, idle_for: float, active: frozenset[str]) -> list[tuple[str, int]]:
        return await self._run(self._purge, idle_for, active)

    def _purge(self, idle_for: float, active: frozenset[str]) -> list[tuple[str, int]]:
        cutoff = time.time() - idle_for
        removed: list[tuple[str, int]] = []
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                upload_id = entry.name.split(".", 1)[0]
                if upload_id in active or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                    if stat.st_mtime >= cutoff:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append((entry.name, stat.st_size))
        return removed

    async def free_space(self) -> int:
        return (await self._run(shutil.disk_usage, self._dir)).free


def _encode_cursor(key: tuple[int, str]) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        mtime, file_id = raw.split(":", 1)
        return int(mtime), _check_id(file_id)
    except (ValueError, NotFound):
        raise ValueError("cursor is not one this server gave out") from None
