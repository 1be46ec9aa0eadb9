"""The storage contract in memory: the fake that ships beside the contract.

For tests of what sits above storage, and as the executable reading of the contract:
the contract tests run against it and against every real backend. Nothing here is
durable or shared between processes; `durable_offset` models what a crash would keep
(bytes written but not flushed are lost by `crash()`).
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ..errors import NotFound
from .base import FileRecord, UploadEntry, UploadInfo

READ_CHUNK = 1 << 20


@dataclass
class _Upload:
    info: UploadInfo
    data: bytearray = field(default_factory=bytearray)
    durable: int = 0
    last_write: float = field(default_factory=time.time)


class _Writer:
    def __init__(self, upload: _Upload) -> None:
        self._upload = upload
        self._closed = False

    @property
    def offset(self) -> int:
        return len(self._upload.data)

    def expect_until(self, offset: int) -> None:
        pass  # bytes are stored as they come

    async def write(self, pieces: Sequence[bytes]) -> None:
        assert not self._closed, "write after close"
        for piece in pieces:
            self._upload.data += piece
        self._upload.last_write = time.time()

    async def flush(self) -> int:
        self._upload.durable = len(self._upload.data)
        return self._upload.durable

    async def close(self) -> None:
        self._closed = True


class MemoryStorage:
    """Uploads and files in dictionaries."""

    def __init__(self, free: int = 1 << 40) -> None:
        self._uploads: dict[str, _Upload] = {}
        self._files: dict[str, tuple[FileRecord, bytes, int]] = {}
        self._free = free
        self._sequence = itertools.count()

    def _upload(self, upload_id: str) -> _Upload:
        try:
            return self._uploads[upload_id]
        except KeyError:
            raise NotFound(f"no upload in progress with id {upload_id!r}") from None

    def crash(self) -> None:
        """What a power cut does: bytes not flushed are gone."""
        for upload in self._uploads.values():
            del upload.data[upload.durable :]

    async def create_upload(self, info: UploadInfo) -> None:
        self._uploads[info.id] = _Upload(info)

    async def get_upload(self, upload_id: str) -> UploadInfo:
        return self._upload(upload_id).info

    async def save_info(self, info: UploadInfo) -> None:
        self._upload(info.id).info = info

    async def upload_offset(self, upload_id: str) -> int:
        return len(self._upload(upload_id).data)

    async def upload_idle_seconds(self, upload_id: str) -> float:
        return max(0.0, time.time() - self._upload(upload_id).last_write)

    async def open_writer(self, upload_id: str) -> _Writer:
        return _Writer(self._upload(upload_id))

    async def truncate(self, upload_id: str, offset: int) -> None:
        upload = self._upload(upload_id)
        del upload.data[offset:]
        upload.durable = min(upload.durable, offset)

    async def read_upload(self, upload_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        data = self._upload(upload_id).data
        for chunk in _chunks(bytes(data[start:end]), 0, None):
            yield chunk

    async def commit(self, upload_id: str, record: FileRecord) -> None:
        upload = self._upload(upload_id)
        self._files[record.id] = (record, bytes(upload.data), next(self._sequence))
        del self._uploads[upload_id]

    async def terminate(self, upload_id: str) -> None:
        self._uploads.pop(upload_id, None)

    async def list_uploads(self) -> list[UploadEntry]:
        now = time.time()
        return [UploadEntry(upload_id, len(upload.data), max(0.0, now - upload.last_write), True, True)
                for upload_id, upload in self._uploads.items()]

    async def get(self, file_id: str) -> FileRecord:
        try:
            return self._files[file_id][0]
        except KeyError:
            raise NotFound(f"no file with id {file_id!r}") from None

    async def read_file(self, record: FileRecord, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        try:
            content = self._files[record.id][1]
        except KeyError:
            raise NotFound(f"no file with id {record.id!r}") from None
        for chunk in _chunks(content, start, end):
            yield chunk

    async def delete(self, file_id: str) -> None:
        if self._files.pop(file_id, None) is None:
            raise NotFound(f"no file with id {file_id!r}")

    async def list_files(self, limit: int, cursor: str | None) -> tuple[list[FileRecord], str | None]:
        after = _decode(cursor)
        ordered = sorted(self._files.values(), key=lambda item: item[2], reverse=True)
        page = [item for item in ordered if after is None or item[2] < after][: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        return [item[0] for item in page], _encode(page[-1][2]) if more and page else None

    async def free_space(self) -> int:
        return self._free


def _chunks(content: bytes, start: int, end: int | None) -> list[bytes]:
    view = content[start:end]
    return [view[at : at + READ_CHUNK] for at in range(0, len(view), READ_CHUNK)]


def _encode(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"m{sequence}".encode()).decode().rstrip("=")


def _decode(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("m"):
            raise ValueError
        return int(raw[1:])
    except ValueError:
        raise ValueError("cursor is not one this server gave out") from None
