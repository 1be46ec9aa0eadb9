"""One lock per upload that holds across processes: an `flock`ed file per upload id.

Several server processes serve one storage folder, so "one request writes an upload at
a time" cannot be a set in one process's memory. A lock is `<dir>/<id>.lock`, held with
`flock(LOCK_EX | LOCK_NB)` by the request that writes the upload (or by the cleanup task
that removes it); the kernel drops it when the process dies, so a crash never leaves a
stuck lock. The file exists only while held: the holder unlinks it before letting go, and
whoever locks a file checks that the path still names it (else it locked an orphan and
tries again).

Stale holders. A client that reconnects after a network change sends a new request while
the old one still holds the lock, silent, until `limits.idle_timeout`. So a holder that
is receiving bytes touches its lock file every heartbeat; a newcomer that finds the lock
busy and its file untouched for `stale_after` leaves a release request (`<id>.release`);
the holder sees it at its next heartbeat and, if it is still silent, is stopped (it keeps
what it received and releases the lock). The newcomer waits a few seconds for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import UploadError, UploadLocked
from ..ids import check_id

# How long a newcomer waits for a stale holder to let go.
TAKEOVER_WAIT = 5.0
# Holders that receive no body (a HEAD, a DELETE, a request finishing) let go within
# moments: a newcomer waits this long before it judges the holder live or silent.
BRIEF_HOLD = 0.3
POLL_INTERVAL = 0.05


class UploadLock:
    """A held lock. `mark_active()` as bytes arrive; `release()` exactly once."""

    def __init__(self, locks: UploadLocks, upload_id: str, fd: int) -> None:
        self.upload_id = upload_id
        self._locks = locks
        self._fd: int | None = fd
        self._active = False
        # Called (on the loop) when a newcomer asks a silent holder to stop.
        self.on_release_request: Callable[[], None] | None = None
        self._heartbeat = asyncio.create_task(self._beat(), name=f"uploadsrv-lock-{upload_id}")

    def mark_active(self) -> None:
        self._active = True

    async def _beat(self) -> None:
        interval = self._locks.heartbeat
        while True:
            await asyncio.sleep(interval)
            if self._active:
                self._active = False
                await self._locks._run(os.utime, self._locks.lock_path(self.upload_id))
            elif self.on_release_request is not None and await self._locks._run(
                    self._locks.release_path(self.upload_id).exists):
                self.on_release_request()

    async def release(self) -> None:
        """Let go (idempotent); safe to call from a request that is being cancelled."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        self._heartbeat.cancel()
        path = self._locks.lock_path(self.upload_id)
        # Shielded: a cancelled request must still give the lock back.
        await asyncio.shield(self._locks._run(_unlock, path, fd))


def _unlock(path: Path, fd: int) -> None:
    # Unlink while still holding it, so nobody can lock this file and think it current.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


def _try_lock(path: Path) -> int | None:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(fd).st_ino:
            os.close(fd)  # an orphan its last holder unlinked: try the current file
            continue
        os.utime(fd)
        return fd


def _is_upload_id(name: str) -> bool:
    try:
        return bool(check_id(name))
    except UploadError:
        return False


def _old_files(folder: Path, older_than: float) -> list[Path]:
    cutoff = time.time() - older_than
    with os.scandir(folder) as entries:
        return [Path(entry.path) for entry in entries
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff]


class UploadLocks:
    """The lock folder; hands out `UploadLock`s."""

    def __init__(self, directory: Path, *, stale_after: float) -> None:
        self._dir = directory
        self.stale_after = stale_after
        self.heartbeat = min(1.0, stale_after / 3)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="uploadsrv-locks")

    def prepare(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def lock_path(self, upload_id: str) -> Path:
        return self._dir / f"{check_id(upload_id)}.lock"

    def release_path(self, upload_id: str) -> Path:
        return self._dir / f"{check_id(upload_id)}.release"

    async def _run(self, function: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def try_acquire(self, upload_id: str) -> UploadLock | None:
        """The lock if nobody holds it, else None (never waits)."""
        path = self.lock_path(upload_id)
        locking = asyncio.get_running_loop().run_in_executor(self._pool, _try_lock, path)
        try:
            fd = await asyncio.shield(locking)
        except asyncio.CancelledError:
            # The thread may still take the lock: give it back then, or it stays held
            # (and the upload answers 423) until the process ends.
            locking.add_done_callback(lambda done: self._abandon(path, done))
            raise
        if fd is None:
            return None
        lock = UploadLock(self, upload_id, fd)
        try:
            # A release request left for an earlier holder is not meant for this one.
            await self._run(self.release_path(upload_id).unlink, True)
        except BaseException:
            await lock.release()
            raise
        return lock

    def _abandon(self, path: Path, locking: asyncio.Future[int | None]) -> None:
        if not locking.cancelled() and locking.exception() is None and (fd := locking.result()) is not None:
            self._pool.submit(_unlock, path, fd)

    async def acquire(self, upload_id: str) -> UploadLock:
        """The lock for a request. A live holder (its file touched within two heartbeats)
        means 423 at once; a silent one is waited on until it is stale, then asked to stop."""
        deadline = time.monotonic() + BRIEF_HOLD
        while (lock := await self.try_acquire(upload_id)) is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
        if lock is not None:
            return lock
        silence = await self._holder_silence(upload_id)
        if silence >= 2 * self.heartbeat:
            deadline = time.monotonic() + max(0.0, self.stale_after - silence) + TAKEOVER_WAIT
            asked = False
            while time.monotonic() < deadline:
                if not asked and await self._holder_silence(upload_id) >= self.stale_after:
                    await self._run(self.release_path(upload_id).touch)
                    asked = True
                await asyncio.sleep(POLL_INTERVAL)
                lock = await self.try_acquire(upload_id)
                if lock is not None:
                    return lock
                if await self._holder_silence(upload_id) < 2 * self.heartbeat:
                    break  # the holder came back to life
        raise UploadLocked(
            f"upload {upload_id} is being written by another request; retry in a few seconds",
            headers={"Retry-After": "1"},
        )

    async def remove_abandoned(self, older_than: float) -> None:
        """Remove lock files no process holds (left by a crash) and old release requests."""
        for path in await asyncio.get_running_loop().run_in_executor(self._pool, _old_files, self._dir, older_than):
            upload_id, _, suffix = path.name.partition(".")
            if suffix == "lock" and _is_upload_id(upload_id):
                lock = await self.try_acquire(upload_id)
                if lock is not None:
                    await lock.release()
            elif suffix == "release":
                await self._run(path.unlink, True)

    async def _holder_silence(self, upload_id: str) -> float:
        """Seconds since the holder last touched its lock file (inf once it is gone)."""
        try:
            stat = await self._run(self.lock_path(upload_id).stat)
        except FileNotFoundError:
            return float("inf")
        assert isinstance(stat, os.stat_result)
        return max(0.0, time.time() - stat.st_mtime)
