"""The server's capacity for uploads: the concurrent-upload limit (429) and the free-space
floor (507). Bookkeeping only: no disk I/O.

`limits.max_concurrent_uploads` is a limit for the whole server, however many worker
processes serve it. With workers, each keeps its own count in one slot of
`SharedUploadSlots` (memory shared by every worker, made by the supervisor before it
forks) and the server's count is the sum. One slot per worker rather than one shared
number, because a worker that dies (kill -9) cannot give its slots back: the supervisor
zeroes the dead worker's slot, and nobody else's count is touched.

Taking a slot (compare the sum with the limit, then count one more) happens under a
POSIX record lock (`lockf`) on the memfd that holds the counts. The kernel drops such a
lock when its holder dies, so a worker killed while taking a slot cannot leave the
others stuck, which a semaphore (`multiprocessing.Lock`) would. The lock is held for a
few bytecodes and involves no disk, so taking it on the event loop is fine.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InsufficientStorage, TooManyUploads, format_size

SLOT_BYTES = 8  # one signed 64-bit count per worker


class SharedUploadSlots:
    """Per-worker upload counts in shared memory. Made before fork; each worker writes only
    its own slot, anyone may read the sum."""

    def __init__(self, workers: int) -> None:
        self._fd = os.memfd_create("uploadsrv-upload-slots", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, SLOT_BYTES * workers)
        self._memory = mmap.mmap(self._fd, SLOT_BYTES * workers)
        self._counts = memoryview(self._memory).cast("q")

    def total(self) -> int:
        # Unlocked: each slot is one aligned 8-byte word, so a reader sees it whole; a
        # count one step stale is harmless here (a status line, /health).
        return sum(self._counts)

    def set(self, index: int, count: int) -> None:
        self._counts[index] = count

    def reset(self, index: int) -> None:
        """Forget a dead worker's uploads (the supervisor, before it starts a replacement)."""
        self._counts[index] = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._counts.release()
        self._memory.close()
        os.close(self._fd)


class ActiveUploads:
    """Upload requests in flight, against `limits.max_concurrent_uploads`.

    Alone (no `slots`) it counts this process; as worker `index` of a group it counts the
    whole server through the shared slots."""

    def __init__(self, limit: int, slots: SharedUploadSlots | None = None, index: int = 0) -> None:
        self._limit = limit
        self._slots = slots
        self._index = index
        self._here = 0

    @property
    def requests(self) -> int:
        """Uploads in progress in the whole server (every worker)."""
        return self._here if self._slots is None else self._slots.total()

    @property
    def here(self) -> int:
        """Uploads in progress in this process."""
        return self._here

    def check_room(self) -> None:
        """Raise 429 when every slot is taken."""
        if self.requests >= self._limit:
            raise TooManyUploads(
                f"the server is already receiving {self._limit} uploads; retry shortly",
                headers={"Retry-After": "5"},
            )

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the slots for the duration, or raise 429."""
        if self._slots is None:
            self.check_room()
            self._here += 1
        else:
            # Check and count under the group's lock, or two workers could both see one
            # slot free and both take it.
            with self._slots.locked():
                self.check_room()
                self._here += 1
                self._slots.set(self._index, self._here)
        try:
            yield
        finally:
            self._here -= 1
            if self._slots is not None:
                # No lock needed to give back: only this process writes its slot, and a
                # reader that sees the old count errs towards refusing.
                self._slots.set(self._index, self._here)


def check_free_space(free: int, min_free_space: int, incoming: int | None) -> None:
    """Refuse with 507 when the disk is below its floor, or would be after `incoming` bytes."""
    if free < min_free_space:
        raise InsufficientStorage(f"the server is low on disk space ({format_size(free)} free); try again later")
    if incoming is not None and free - incoming < min_free_space:
        raise InsufficientStorage(
            f"not enough disk space for {format_size(incoming)} ({format_size(free)} free); "
            "try again later or send a smaller file"
        )
