"""Which upload locks a server uses (`locks.backend`), and what both kinds promise.

`file` (the default): an flock per upload in `storage.tmp_dir/locks`, across the
processes of one machine (`locks.py`). `redis`: a lease per upload in a shared Redis,
across instances on several machines (`redis_locks.py`). Both give the same stale-holder
takeover; sessions and the cleanup task see only the `Locks` protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from ..config import Config
from .locks import UploadLocks
from .redis_locks import RedisUploadLocks

FILE_LOCKS_FOLDER = "locks"  # under storage.tmp_dir


class Lock(Protocol):
    """What a request holds: `UploadLock` and `RedisUploadLock` both are one."""

    upload_id: str
    on_release_request: Callable[[], None] | None

    def mark_active(self) -> None: ...

    async def release(self) -> None: ...


class Locks(Protocol):
    """What sessions and the cleanup task use: `UploadLocks` and `RedisUploadLocks`."""

    stale_after: float
    heartbeat: float

    async def try_acquire(self, upload_id: str) -> Lock | None: ...

    async def acquire(self, upload_id: str) -> Lock: ...

    async def remove_abandoned(self, older_than: float) -> None: ...


def locks_from_config(config: Config) -> UploadLocks | RedisUploadLocks:
    """The lock backend `locks.backend` names."""
    stale_after = config.limits.stale_after
    if config.locks.backend == "redis":
        return RedisUploadLocks(config.locks.redis_url, stale_after=stale_after, lease=config.locks.lease)
    return UploadLocks(config.storage.tmp_dir / FILE_LOCKS_FOLDER, stale_after=stale_after)


@contextlib.asynccontextmanager
async def open_locks(config: Config) -> AsyncIterator[UploadLocks | RedisUploadLocks]:
    """The configured locks, ready (folder made, or Redis checked), closed on exit."""
    locks = locks_from_config(config)
    locks.prepare()
    if isinstance(locks, RedisUploadLocks):
        await locks.check()
    try:
        yield locks
    finally:
        if isinstance(locks, RedisUploadLocks):
            await locks.aclose()
        else:
            locks.close()
