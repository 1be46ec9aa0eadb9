"""The server's capacity for uploads: the concurrent-upload limit (429) and the free-space
floor (507). Pure bookkeeping, no I/O."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InsufficientStorage, TooManyUploads, format_size


class ActiveUploads:
    """Upload requests in flight, against `limits.max_concurrent_uploads`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._requests = 0

    @property
    def requests(self) -> int:
        return self._requests

    def check_room(self) -> None:
        """Raise 429 when every slot is taken."""
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


def check_free_space(free: int, min_free_space: int, incoming: int | None) -> None:
    """Refuse with 507 when the disk is below its floor, or would be after `incoming` bytes."""
    if free < min_free_space:
        raise InsufficientStorage(f"the server is low on disk space ({format_size(free)} free); try again later")
    if incoming is not None and free - incoming < min_free_space:
        raise InsufficientStorage(
            f"not enough disk space for {format_size(incoming)} ({format_size(free)} free); "
            "try again later or send a smaller file"
        )
