"""The background cleanup task: every `cleanup.interval`, remove unfinished uploads (data
and info together) and leftovers of a crash (data without info, info without data)
idle longer than `cleanup.partial_expiry`. It takes each upload's lock (try-lock, the
same cross-process lock requests take) before removing anything, so it never removes
an upload with a request in progress, and judges idleness by the upload's last write,
again under the lock.

Started and stopped with the app through `cleanup_ctx`; one pass can also be run
directly (`run_cleanup_pass`), which is how the tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

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


async def _every_interval(app: web.Application) -> None:
    interval = app[CONFIG].cleanup.interval
    while True:
        await asyncio.sleep(interval)
        try:
            await run_cleanup_pass(app)
        except Exception:
            # One bad pass (a permission error, a vanished folder) must not end the task.
            log.exception("cleanup pass failed; trying again in %g s", interval)


async def cleanup_context(app: web.Application) -> AsyncIterator[None]:
    app[CLEANUP_TASK] = asyncio.create_task(_every_interval(app), name="uploadsrv-cleanup")
    yield
    app[CLEANUP_TASK].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[CLEANUP_TASK]
