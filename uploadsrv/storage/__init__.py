"""Where upload bytes and file records live; see `storage.base` for the contract."""

from .base import FileRecord, Storage, UploadEntry, UploadInfo, UploadWriter
from .filesystem import FilesystemStorage
from .memory import MemoryStorage

__all__ = ["FileRecord", "FilesystemStorage", "MemoryStorage", "Storage", "UploadEntry", "UploadInfo", "UploadWriter"]
