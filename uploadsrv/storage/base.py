"""The storage contract, written from the caller's side.

An upload's bytes go to a *part* (in progress, invisible to readers) until `commit`
makes them a *file* with a record. Callers (the ingest pipeline, the one-shot and the
resumable handlers, the cleanup task) only use this contract; they never build paths.
A backend never imports aiohttp and raises `errors.UploadError` subclasses
(`NotFound`, `InsufficientStorage`) for conditions a client must hear about.

Life of an upload:
    create_part(id) -> PartWriter   (blocking writer, used from a worker thread)
    PartWriter.write(...)*, PartWriter.sync(), PartWriter.close()
    commit(record)                  -> the file and its record are visible, durably
    or discard_part(id)             -> nothing is left
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
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

    @property
    def url(self) -> str:
        return f"/files/{self.id}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = dict(self.fields)
        data["url"] = self.url
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileRecord:
        return cls(
            id=str(data["id"]), filename=str(data["filename"]), size=int(data["size"]),
            sha256=str(data["sha256"]), type=str(data["type"]), mime=str(data["mime"]),
            created_at=str(data["created_at"]), fields=dict(data.get("fields") or {}),
        )


class PartWriter(Protocol):
    """Appends to one part. Every method blocks: call them from a worker thread."""

    def write(self, pieces: Sequence[bytes]) -> None:
        """Append the pieces in order; raises InsufficientStorage when the disk is full.

        A writer may hold back a short tail (under 4 KiB) until the next write or sync,
        so the part's size on disk can trail what was written until `sync`.
        """

    def sync(self) -> None:
        """Make everything written so far durable (fsync)."""

    def close(self) -> None:
        """Release the handle; idempotent."""


class Storage(Protocol):
    """Parts in progress and completed files with their records."""

    async def create_part(self, upload_id: str) -> PartWriter:
        """Start an empty part for a new upload."""

    async def open_part(self, upload_id: str) -> PartWriter:
        """Reopen an existing part to append at its end; NotFound if there is none."""

    async def part_size(self, upload_id: str) -> int:
        """Bytes stored in the part so far; NotFound if there is none."""

    async def discard_part(self, upload_id: str) -> None:
        """Remove a part and anything kept beside it; no error if already gone."""

    async def commit(self, record: FileRecord) -> None:
        """Turn the synced part `record.id` into a visible file, then write its record.

        When this returns, content and record survive a crash. Until then nothing of
        the upload is visible to readers of the completed files."""

    async def get(self, file_id: str) -> FileRecord:
        """The record of a completed file; NotFound if there is none."""

    def content_path(self, record: FileRecord) -> Path:
        """Where a completed file's bytes can be read (for sendfile and Range)."""

    async def delete(self, file_id: str) -> None:
        """Remove a completed file, record first; NotFound if there is none."""

    async def list_files(self, limit: int, cursor: str | None) -> tuple[list[FileRecord], str | None]:
        """Completed files, newest first, and the cursor of the next page (or None)."""

    async def purge_stale_parts(self, idle_for: float, active: frozenset[str]) -> list[tuple[str, int]]:
        """Remove parts untouched for `idle_for` seconds and not in `active`: (name, bytes) each."""

    async def free_space(self) -> int:
        """Bytes free where completed files are stored."""
