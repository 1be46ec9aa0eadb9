"""Where upload bytes and file records live; see `storage.base` for the contract."""

from .base import FileRecord, PartWriter, Storage
from .filesystem import FilesystemStorage

__all__ = ["FileRecord", "FilesystemStorage", "PartWriter", "Storage"]
