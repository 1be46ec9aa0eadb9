"""The background cleanup task: every `cleanup.interval`, remove unfinished uploads (data
and info together) and leftovers of a crash (data without info, info without data)
idle longer than `cleanup.partial_expiry`. It takes each upload's lock (try-lock, the
same cross-process lock requests take) before removing anything, so it never removes
an upload with a request in progress, and judges idleness by the upload's last write,
again under the lock.

Started and stopped with the app through `cleanup_ctx`; one pass can also be run
directly (`run_cleanup_pass`), which is how the tests drive it without sleeping.

One process runs the passes. Every worker process has the task, but before a pass it
must hold the cleanup leadership: an `flock` on `storage.tmp_dir` itself (the folder,
so no file is added to it). The first worker to ask after start-up gets it and keeps it
for its life; the kernel drops it when that worker dies, and another worker takes it
at its next tick. The same lock keeps two servers on one storage folder from both
cleaning. Why not the supervisor: it would need storage and locks of its own, and a
fault in a pass would then take the whole server down rather than one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .appkeys import CLEANUP_TASK, CONFIG, LOCKS, STORAGE
from .errors import NotFound, format_size

log = logging.getLogger(__name__)


async def run_cleanup_pass(app: web.Application) -> list[tuple[str, int]]:
    """One pass; returns what it removed as (upload id, bytes)."""
    storage, locks = app[STORAGE], app[LOCKS]
    expiry = app[CONFIG].cleanup.partial_expiry
    removed: list[tuple[str, int]] = []
    for entry in await storage.list_uploads():
        if entry.idle_seconds < expiry:
            continue
        lock = await locks.try_acquire(entry.id)
        if lock is None:
            continue  # a request is writing it
        try:
            if entry.has_data:
                try:
                    if await storage.upload_idle_seconds(entry.id) < expiry:
                        continue  # written since it was listed
                except NotFound:
                    continue  # committed or terminated since it was listed
            await storage.terminate(entry.id)
            removed.append((entry.id, entry.size))
        finally:
            await lock.release()
    await locks.remove_abandoned(expiry)
    if removed:
        total = sum(size for _, size in removed)
        names = ", ".join(name for name, _ in removed[:20])
        log.info("cleanup: removed %d expired upload(s), %s reclaimed: %s", len(removed), format_size(total), names)
    return removed


def _try_to_lead(folder: Path) -> int | None:
    """A descriptor holding the cleanup leadership of `folder`, or None when another holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def _every_interval(app: web.Application) -> None:
    interval = app[CONFIG].cleanup.interval
    folder = app[CONFIG].storage.tmp_dir
    leadership: int | None = None
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                if leadership is None:
                    leadership = await asyncio.to_thread(_try_to_lead, folder)
                    if leadership is None:
                        continue  # another process runs the passes
                    log.info("cleanup: this process (pid %d) runs the cleanup passes", os.getpid())
                await run_cleanup_pass(app)
            except Exception:
                # One bad pass (a permission error, a vanished folder) must not end the task.
                log.exception("cleanup pass failed; trying again in %g s", interval)
    finally:
        if leadership is not None:
            os.close(leadership)  # lets another process lead


async def cleanup_context(app: web.Application) -> AsyncIterator[None]:
    app[CLEANUP_TASK] = asyncio.create_task(_every_interval(app), name="uploadsrv-cleanup")
    yield
    app[CLEANUP_TASK].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[CLEANUP_TASK]
