"""Every piece of application state, each behind one typed `web.AppKey`.

No module keeps state of its own: the app factory and `cleanup_ctx` fill these keys.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .capacity import ActiveUploads
from .config import Config
from .metrics import Metrics
from .outcomes import Outcomes
from .storage import Storage
from .uploads.hooks import CompletionHooks
from .uploads.lock_store import Locks
from .uploads.session import UploadServices

CONFIG = web.AppKey("config", Config)
STORAGE = web.AppKey("storage", Storage)
ACTIVE_UPLOADS = web.AppKey("active_uploads", ActiveUploads)
# Hashing of upload bytes runs here, never on the event loop (storage has executors of
# its own for disk work).
HASH_EXECUTOR = web.AppKey("hash_executor", ThreadPoolExecutor)
LOCKS = web.AppKey("locks", Locks)
UPLOADS = web.AppKey("uploads", UploadServices)
HOOKS = web.AppKey("hooks", CompletionHooks)
METRICS = web.AppKey("metrics", Metrics)
OUTCOMES = web.AppKey("outcomes", Outcomes)
CLEANUP_TASK = web.AppKey("cleanup_task", asyncio.Task)
PAGE = web.AppKey("page", bytes)
