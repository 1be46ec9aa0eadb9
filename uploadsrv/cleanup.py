"""The background cleanup task: every `cleanup.interval`, remove parts (unfinished
uploads and leftovers of a crash) idle longer than `cleanup.partial_expiry`, sparing
every upload that a request is writing right now.

Started and stopped with the app through `cleanup_ctx`; one pass can also be run
directly (`run_cleanup_pass`), which is how the tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .appkeys import ACTIVE_UPLOADS, CLEANUP_TASK, CONFIG, STORAGE
from .errors import format_size

log = logging.getLogger(__name__)


async def run_cleanup_pass(app: web.Application) -> list[tuple[str, int]]:
    """One pass; returns what it removed as (name, bytes)."""
    config = app[CONFIG].cleanup
    removed = await app[STORAGE].purge_stale_parts(config.partial_expiry, app[ACTIVE_UPLOADS].ids())
    if removed:
        total = sum(size for _, size in removed)
        names = ", ".join(name for name, _ in removed[:20])
        log.info("cleanup: removed %d stale part file(s), %s reclaimed: %s", len(removed), format_size(total), names)
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
