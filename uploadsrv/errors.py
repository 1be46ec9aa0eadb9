"""Domain errors: each carries the HTTP status, a machine code and a message for people.

The tree, all raised by handlers, the ingest pipeline or storage and rendered to the
contract's JSON shape in exactly one place (`middlewares.error_middleware`):

    UploadError(status, code, message)
      ├── MalformedMultipart       400 malformed_multipart
      ├── MissingFile              400 missing_file
      ├── TooManyFiles             400 too_many_files
      ├── TooManyFields            400 too_many_fields
      ├── FieldTooLarge            400 field_too_large
      ├── UnexpectedPart           400 unexpected_part
      ├── InvalidQuery             400 invalid_query
      ├── InvalidHeader            400 invalid_header (a tus header that breaks its rule)
      ├── UnsupportedChecksum      400 unsupported_checksum_algorithm
      ├── Unauthorized             401 unauthorized
      ├── FinalUpload              403 final_upload (PATCH to a concatenated upload)
      ├── NotFound                 404 not_found
      ├── UploadTimeout            408 upload_timeout
      ├── OffsetMismatch           409 offset_mismatch
      ├── UnsupportedVersion       412 unsupported_version
      ├── FileTooLarge             413 file_too_large
      ├── UnsupportedMediaType     415 unsupported_media_type
      ├── UnsupportedFileType      415 unsupported_file_type
      ├── UploadLocked             423 upload_locked
      ├── TooManyUploads           429 too_many_uploads
      ├── ChecksumMismatch         460 checksum_mismatch
      ├── LocksUnavailable         503 locks_unavailable (the shared lock store is unreachable)
      └── InsufficientStorage      507 insufficient_storage

This module must not import aiohttp: storage raises these too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class UploadError(Exception):
    """An error the client gets as `{"error": {"status", "code", "message"}}`."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: Mapping[str, str] = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


class MalformedMultipart(UploadError):
    status, code = 400, "malformed_multipart"


class MissingFile(UploadError):
    status, code = 400, "missing_file"


class TooManyFiles(UploadError):
    status, code = 400, "too_many_files"


class TooManyFields(UploadError):
    status, code = 400, "too_many_fields"


class FieldTooLarge(UploadError):
    status, code = 400, "field_too_large"


class UnexpectedPart(UploadError):
    status, code = 400, "unexpected_part"


class InvalidQuery(UploadError):
    status, code = 400, "invalid_query"


class InvalidHeader(UploadError):
    status, code = 400, "invalid_header"


class UnsupportedChecksum(UploadError):
    status, code = 400, "unsupported_checksum_algorithm"


class FinalUpload(UploadError):
    status, code = 403, "final_upload"


class OffsetMismatch(UploadError):
    status, code = 409, "offset_mismatch"


class UnsupportedVersion(UploadError):
    status, code = 412, "unsupported_version"


class ChecksumMismatch(UploadError):
    status, code = 460, "checksum_mismatch"


class Unauthorized(UploadError):
    status, code = 401, "unauthorized"


class NotFound(UploadError):
    status, code = 404, "not_found"


class UploadTimeout(UploadError):
    status, code = 408, "upload_timeout"


class FileTooLarge(UploadError):
    status, code = 413, "file_too_large"


class UnsupportedMediaType(UploadError):
    status, code = 415, "unsupported_media_type"


class UnsupportedFileType(UploadError):
    status, code = 415, "unsupported_file_type"


class UploadLocked(UploadError):
    status, code = 423, "upload_locked"


class TooManyUploads(UploadError):
    status, code = 429, "too_many_uploads"


class LocksUnavailable(UploadError):
    """The shared lock store cannot be reached: nobody may write an upload meanwhile."""

    status, code = 503, "locks_unavailable"


class InsufficientStorage(UploadError):
    status, code = 507, "insufficient_storage"


def format_size(size: int) -> str:
    """Human size for messages: 5368709120 -> "5 GiB"."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        value /= 1024
    return f"{size} bytes"
