"""Where the S3 backend keeps things in its bucket, and the state of an upload: pure, no I/O.

Keys, under the configured prefix:

    uploads/<id>.info         the upload's `UploadInfo` as JSON (replaced whole by save_info)
    uploads/<id>.state        the backend's `UploadState` as JSON: what the bytes are made of
    uploads/<id>.tail.<seq>   the bytes after the last part (under 5 MiB), one key per version
    files/<id>                the content: the multipart upload's key, a file once completed
    records/<id>.json         a completed file's `FileRecord` (written last at commit)
    index/<inverted ns>-<id>  an empty marker per file; keys sort newest first for listing

An upload's bytes are, in order: `base` bytes of the object at files/<id> (only after the
upload was assembled there early, e.g. to read it back), then the recorded parts of the
multipart upload, then the tail object. Parts of the multipart upload that the state does
not record (a writer that died before its flush) are not the upload's bytes: they are
overwritten by the next writer or left out of the completion.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound
from ..ids import check_id

MIN_PART = 5 << 20  # S3's smallest part but the last
MAX_PART = 5 << 30  # S3's largest part (and largest part copy)
MAX_PARTS = 10_000
# Inverted nanosecond timestamps stay 20 digits wide until the year 5138.
_INVERT = 10**20
_INDEX_NAME = re.compile(r"^(\d{20})-([A-Za-z0-9_-]{1,64})$")


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


@dataclass(frozen=True)
class UploadState:
    """The recorded make-up of an upload's bytes: base, then parts, then tail."""

    multipart: str | None = None  # the S3 UploadId of the content's multipart upload
    parts: tuple[Part, ...] = ()
    base: int = 0  # bytes at the start held by the completed object at files/<id>
    tail_seq: int = 0  # version of the tail object; 0: there is none
    tail_size: int = 0
    seq: int = 0  # the last tail version used (never reused, so a crash cannot mix two)

    @property
    def parts_size(self) -> int:
        return sum(part.size for part in self.parts)

    @property
    def size(self) -> int:
        return self.base + self.parts_size + self.tail_size

    @property
    def next_part(self) -> int:
        return self.parts[-1].number + 1 if self.parts else 1

    def check_parts(self, upload_id: str, listed: Mapping[int, Part]) -> None:
        """Raise unless S3's ListParts (`listed`) holds every recorded part as recorded:
        the offset is what S3 holds, never what the state claims."""
        lost = [part.number for part in self.parts if listed.get(part.number) != part]
        if lost:
            raise RuntimeError(f"upload {upload_id!r}: S3 no longer holds part(s) {lost} as recorded")

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "multipart": self.multipart, "base": self.base, "tail_seq": self.tail_seq,
                "tail_size": self.tail_size, "seq": self.seq,
                "parts": [[part.number, part.size, part.etag] for part in self.parts]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadState:
        multipart = data.get("multipart")
        return cls(
            multipart=None if multipart is None else str(multipart),
            parts=tuple(Part(int(number), int(size), str(etag)) for number, size, etag in data.get("parts") or ()),
            base=int(data.get("base") or 0), tail_seq=int(data.get("tail_seq") or 0),
            tail_size=int(data.get("tail_size") or 0), seq=int(data.get("seq") or 0),
        )


@dataclass(frozen=True)
class Layout:
    """Every key the backend uses, from one prefix ("" or ending in "/" by convention)."""

    prefix: str = ""

    @property
    def uploads(self) -> str:
        return f"{self.prefix}uploads/"

    @property
    def index_folder(self) -> str:
        return f"{self.prefix}index/"

    def info(self, upload_id: str) -> str:
        return f"{self.uploads}{check_id(upload_id)}.info"

    def state(self, upload_id: str) -> str:
        return f"{self.uploads}{check_id(upload_id)}.state"

    def tail(self, upload_id: str, seq: int) -> str:
        return f"{self.uploads}{check_id(upload_id)}.tail.{seq}"

    def upload_objects(self, upload_id: str) -> str:
        """The prefix of every object of one upload (the dot keeps `a1` from matching `a10`)."""
        return f"{self.uploads}{check_id(upload_id)}."

    def content(self, file_id: str) -> str:
        return f"{self.prefix}files/{check_id(file_id)}"

    @property
    def content_folder(self) -> str:
        return f"{self.prefix}files/"

    def record(self, file_id: str) -> str:
        return f"{self.prefix}records/{check_id(file_id)}.json"

    def index(self, file_id: str, committed_ns: int) -> str:
        return f"{self.index_folder}{_INVERT - committed_ns:020d}-{check_id(file_id)}"

    def upload_of(self, key: str) -> tuple[str, str] | None:
        """(upload id, kind: "info", "state" or "tail") of a key under uploads/, else None."""
        if not key.startswith(self.uploads):
            return None
        upload_id, dot, kind = key[len(self.uploads):].partition(".")
        kind = kind.split(".", 1)[0]
        if not dot or kind not in ("info", "state", "tail"):
            return None
        try:
            return check_id(upload_id), kind
        except NotFound:
            return None

    def file_of_index(self, key: str) -> str | None:
        """The file id an index key names, else None."""
        match = _INDEX_NAME.match(key[len(self.index_folder):]) if key.startswith(self.index_folder) else None
        return match.group(2) if match else None


def part_sizes(total: int, preferred: int) -> list[int]:
    """How to cut one request's `total` bytes into parts, none over `preferred` nor under
    MIN_PART; [] when they cannot be (fewer than MIN_PART: they end in a tail).

    One part more than `preferred` alone needs, when the parts stay that large: the first
    is full sooner, so S3 starts on it sooner (the engine idles from one PATCH's last part
    to the next PATCH's first). And no tail when they can be cut so: a 10 MiB PATCH is two
    5 MiB parts, not 8 MiB and a 2 MiB tail that the next PATCH reads back."""
    needed = -(-total // preferred)
    for count in (needed + 1, needed):
        if count and total // count >= MIN_PART:
            size, longer = divmod(total, count)
            return [size + 1] * longer + [size] * (count - longer)
    return []


def copy_ranges(size: int) -> list[tuple[int, int]]:
    """Split `size` bytes (at least MIN_PART) into [start, end) ranges that are each a valid
    part copy: at most MAX_PART, at least MIN_PART."""
    count = -(-size // MAX_PART)
    step = -(-size // count)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def encode_cursor(index_key_name: str) -> str:
    return base64.urlsafe_b64encode(f"s3:{index_key_name}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The index key name (after index/) a cursor continues after; ValueError if not ours."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this server gave out") from None
    if not raw.startswith("s3:") or not _INDEX_NAME.match(raw[3:]):
        raise ValueError("cursor is not one this server gave out")
    return raw[3:]
