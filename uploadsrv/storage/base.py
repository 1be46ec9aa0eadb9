"""The storage contract, written from the caller's side.

An *upload* is bytes in progress plus its `UploadInfo`, invisible to readers of files,
until `commit` makes it a *file* with a `FileRecord`. Callers (the upload session, the
files API, the cleanup task) only use this contract: they never build paths, and every
method is a coroutine; a backend runs its blocking work on executors of its own, bulk
writes apart from small metadata operations. A backend never imports aiohttp and raises
`errors.UploadError` subclasses (`NotFound`, `InsufficientStorage`) for conditions a
client must hear about.

Life of an upload:
    create_upload(info)                      info written atomically, no bytes yet
    open_writer(id) -> UploadWriter          write(pieces)*, flush() -> durable offset, close()
    save_info(info)                          e.g. the running hash state after a flush
    truncate(id, offset)                     drop bytes past `offset` (a checksum mismatch)
    read_upload(id, start, end)              read bytes back (hash rebuild, concatenation)
    commit(id, record)                       the bytes become a file; the record is written last
    or terminate(id)                         nothing of it is left

Locking is not storage's business: callers hold the upload's lock (`uploads.locks`)
around everything but reads of completed files.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class FileRecord:
    """What the API returns for a completed file, and what `<id>.json` holds."""

    id: str
    filename: str
    size: int
    sha256: str
    type: str
    mime: str
    created_at: str
    fields: Mapping[str, str] = field(default_factory=dict)
    # A tus final upload's Upload-Concat ("final;/files/a /files/b"); only then in the JSON.
    upload_concat: str = ""

    @property
    def url(self) -> str:
        return f"/files/{self.id}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = dict(self.fields)
        data["url"] = self.url
        if not self.upload_concat:
            del data["upload_concat"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileRecord:
        return cls(
            id=str(data["id"]), filename=str(data["filename"]), size=int(data["size"]),
            sha256=str(data["sha256"]), type=str(data["type"]), mime=str(data["mime"]),
            created_at=str(data["created_at"]), fields=dict(data.get("fields") or {}),
            upload_concat=str(data.get("upload_concat") or ""),
        )


@dataclass(frozen=True)
class UploadInfo:
    """Everything about an upload in progress except its bytes.

    `hash_state` is the running SHA-256 after the first `hash_offset` bytes (None: hash
    from the start). `media` is the detected type once the head decided it."""

    id: str
    kind: str  # "multipart" or "tus"
    created_at: str
    length: int | None = None  # None while a tus upload defers its length
    metadata: Mapping[str, str] = field(default_factory=dict)
    metadata_header: str = ""  # tus Upload-Metadata as the client sent it, echoed on HEAD
    filename: str = ""
    owner: str = ""  # digest of the bearer token that created it; "" without auth
    concat: str = ""  # "", "partial" or "final"
    partials: tuple[str, ...] = ()  # a final upload's partial upload ids, in order
    media: str | None = None
    hash_state: bytes | None = None
    hash_offset: int = 0

    def with_hash(self, state: bytes | None, offset: int, media: str | None) -> UploadInfo:
        return replace(self, hash_state=state, hash_offset=offset if state is not None else 0, media=media)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metadata"] = dict(self.metadata)
        data["partials"] = list(self.partials)
        data["hash_state"] = base64.b64encode(self.hash_state).decode() if self.hash_state else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadInfo:
        state = data.get("hash_state")
        length = data.get("length")
        return cls(
            id=str(data["id"]), kind=str(data["kind"]), created_at=str(data["created_at"]),
            length=None if length is None else int(length),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            metadata_header=str(data.get("metadata_header") or ""),
            filename=str(data.get("filename") or ""), owner=str(data.get("owner") or ""),
            concat=str(data.get("concat") or ""), partials=tuple(str(p) for p in data.get("partials") or ()),
            media=None if data.get("media") is None else str(data["media"]),
            hash_state=base64.b64decode(state) if state else None,
            hash_offset=int(data.get("hash_offset") or 0),
        )


@dataclass(frozen=True)
class UploadEntry:
    """What the cleanup task sees of an upload in progress (or of its leftovers)."""

    id: str
    size: int  # bytes the backend holds for it (data and info)
    idle_seconds: float  # since its last write
    has_info: bool
    has_data: bool


class UploadWriter(Protocol):
    """Appends to one upload. Calls never overlap: await each before the next."""

    @property
    def offset(self) -> int:
        """Bytes written so far (durable or not)."""

    def expect_until(self, offset: int) -> None:
        """A hint: the request being written should take the upload to `offset` (a tus
        PATCH's Content-Length), so a backend can plan how to store its bytes. Nothing
        counts before `flush`, and fewer bytes than expected must be fine."""

    async def write(self, pieces: Sequence[bytes]) -> None:
        """Append the pieces in order; InsufficientStorage when the disk is full."""

    async def flush(self) -> int:
        """Make everything written durable; returns the durable offset."""

    async def close(self) -> None:
        """Release the writer without flushing; idempotent, safe after a failed write."""


class Storage(Protocol):
    """Uploads in progress and completed files with their records."""

    # -- uploads in progress ------------------------------------------------------------

    async def create_upload(self, info: UploadInfo) -> None:
        """A new, empty upload with its info, both durable."""

    async def get_upload(self, upload_id: str) -> UploadInfo:
        """The info of an upload in progress; NotFound if there is none."""

    async def save_info(self, info: UploadInfo) -> None:
        """Replace an upload's info atomically and durably."""

    async def upload_offset(self, upload_id: str) -> int:
        """Bytes durably stored for the upload (the offset's only truth); NotFound if none."""

    async def upload_idle_seconds(self, upload_id: str) -> float:
        """Seconds since the upload's last write; NotFound if none."""

    async def open_writer(self, upload_id: str) -> UploadWriter:
        """A writer that appends at the upload's end, its `offset` at open the stored offset
        (what `upload_offset` answers); NotFound if there is none."""

    async def truncate(self, upload_id: str, offset: int) -> None:
        """Drop the bytes past `offset`, durably."""

    def read_upload(self, upload_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The upload's bytes from `start` to `end` (its end when None), in chunks."""

    async def commit(self, upload_id: str, record: FileRecord) -> None:
        """Turn the flushed upload into a visible file, then write its record (last).

        When this returns, content and record survive a crash, and the upload (info
        included) is gone. Until then nothing of it is visible to readers of files."""

    async def terminate(self, upload_id: str) -> None:
        """Remove the upload, bytes and info; no error if already gone."""

    async def list_uploads(self) -> list[UploadEntry]:
        """Every upload in progress and every leftover (bytes without info, info without bytes)."""

    # -- completed files ----------------------------------------------------------------

    async def get(self, file_id: str) -> FileRecord:
        """The record of a completed file; NotFound if there is none."""

    def read_file(self, record: FileRecord, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """A completed file's bytes from `start` to `end` (exclusive; the end when None)."""

    async def delete(self, file_id: str) -> None:
        """Remove a completed file, record first; NotFound if there is none."""

    async def list_files(self, limit: int, cursor: str | None) -> tuple[list[FileRecord], str | None]:
        """Completed files, newest first, and the cursor of the next page (or None).

        ValueError for a cursor this backend did not give out."""

    async def free_space(self) -> int:
        """Bytes free where uploads and files are stored."""
