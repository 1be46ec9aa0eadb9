"""Admission: which uploads may start, and which are in progress right now.

Owns the concurrent-upload limit (429), the free-space floor (507) and the set of upload
ids that have a request writing to them (so cleanup never removes those, and a second
writer to the same upload is refused with 423).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InsufficientStorage, TooManyUploads, UploadLocked, format_size


class ActiveUploads:
    """Upload requests in flight and the upload ids they are writing."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._requests = 0
        self._ids: set[str] = set()

    @property
    def requests(self) -> int:
        return self._requests

    def ids(self) -> frozenset[str]:
        return frozenset(self._ids)

    def check_room(self) -> None:
        """Raise 429 when every `limits.max_concurrent_uploads` slot is taken."""
        if self._requests >= self._limit:
            raise TooManyUploads(
                f"the server is already receiving {self._limit} uploads; retry shortly",
                headers={"Retry-After": "5"},
            )

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the slots for the duration, or raise 429."""
        self.check_room()
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1

    @contextmanager
    def writing(self, upload_id: str) -> Iterator[None]:
        """Mark `upload_id` as being written; a second writer gets 423."""
        if upload_id in self._ids:
            raise UploadLocked(f"upload {upload_id} is being written by another request; retry later")
        self._ids.add(upload_id)
        try:
            yield
        finally:
            self._ids.discard(upload_id)


def check_free_space(free: int, min_free_space: int, incoming: int | None) -> None:
    """Refuse with 507 when the disk is below its floor, or would be after `incoming` bytes."""
    if free < min_free_space:
        raise InsufficientStorage(
            f"the server is low on disk space ({format_size(free)} free); try again later"
        )
    if incoming is not None and free - incoming < min_free_space:
        raise InsufficientStorage(
            f"not enough disk space for {format_size(incoming)} ({format_size(free)} free); "
            "try again later or send a smaller file"
        )
