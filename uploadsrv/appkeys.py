"""Every piece of application state, each behind one typed `web.AppKey`.

No module keeps state of its own: the app factory and `cleanup_ctx` fill these keys.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .admission import ActiveUploads
from .config import Config
from .storage import Storage

CONFIG = web.AppKey("config", Config)
STORAGE = web.AppKey("storage", Storage)
ACTIVE_UPLOADS = web.AppKey("active_uploads", ActiveUploads)
# Disk writes, fsync and hashing run here, never on the event loop; a pool of our own
# so that bulk I/O cannot starve other users of the loop's default executor.
IO_EXECUTOR = web.AppKey("io_executor", ThreadPoolExecutor)
CLEANUP_TASK = web.AppKey("cleanup_task", asyncio.Task)
PAGE = web.AppKey("page", bytes)
