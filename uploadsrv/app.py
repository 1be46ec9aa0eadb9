"""The application factory: it only wires config, state, middlewares and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import page
from .admission import expect_handler, guarded
from .appkeys import ACTIVE_UPLOADS, CONFIG, HASH_EXECUTOR, HOOKS, LOCKS, METRICS, OUTCOMES, PAGE, STORAGE, UPLOADS
from .capacity import ActiveUploads
from .cleanup import cleanup_context
from .config import Config
from .cross_origin import add_response_headers, cors_middleware
from .handlers import files, metrics, oneshot, tus
from .metrics import Metrics
from .outcomes import Outcomes
from .middlewares import auth_middleware, error_middleware
from .storage.factory import open_storage
from .uploads.hooks import CompletionHooks, hooks_context
from .uploads.lock_store import open_locks
from .uploads.session import UploadServices

# Enough threads for several uploads' batches to hash at once on 2+ cores, few enough
# that a burst of uploads cannot spawn an unbounded number of hashers.
HASH_THREADS = 8


def create_app(config: Config, active_uploads: ActiveUploads | None = None) -> web.Application:
    """The app; a worker process passes the `active_uploads` that share the server's limit."""
    app = web.Application(middlewares=[error_middleware, cors_middleware, auth_middleware])
    app[CONFIG] = config
    app[ACTIVE_UPLOADS] = active_uploads or ActiveUploads(config.limits.max_concurrent_uploads)
    app[PAGE] = page.load_page()
    app[METRICS] = Metrics()
    app[HOOKS] = CompletionHooks(config.hooks, on_attempt=app[METRICS].hook_attempt)
    app[OUTCOMES] = Outcomes(app[METRICS], app[HOOKS])
    app.on_response_prepare.append(add_response_headers)
    app.cleanup_ctx.append(_storage_context)
    app.cleanup_ctx.append(cleanup_context)
    app.cleanup_ctx.append(lambda app: hooks_context(app[HOOKS]))
    _add_routes(app)
    return app


async def _storage_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with open_storage(config) as storage, open_locks(config) as locks:
        hashing = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="uploadsrv-hash")
        app[STORAGE] = storage
        app[LOCKS] = locks
        app[HASH_EXECUTOR] = hashing
        app[UPLOADS] = UploadServices(
            storage=storage, locks=locks, hash_executor=hashing, max_size=config.limits.max_file_size,
            allowed=config.types.allowed, expiry=config.cleanup.partial_expiry,
            on_start=app[OUTCOMES].started, on_commit=app[OUTCOMES].committed,
        )
        yield
        hashing.shutdown(wait=True)


def _add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", page.index)
    router.add_get("/static/{name}", page.static_file)
    router.add_get("/health", files.health)
    router.add_get("/metrics", metrics.metrics_page)
    for path, handler, policy in (("/upload", oneshot.upload, oneshot.SINGLE),
                                  ("/upload-multiple", oneshot.upload_multiple, oneshot.MULTIPLE)):
        router.add_post(path, guarded(policy, handler), expect_handler=expect_handler(policy))
    router.add_get("/files", files.list_files)
    router.add_route("OPTIONS", "/files", tus.options)
    router.add_route("OPTIONS", "/files/", tus.options)
    router.add_post("/files", guarded(tus.CREATE, tus.create), expect_handler=expect_handler(tus.CREATE))
    router.add_post("/files/", guarded(tus.CREATE, tus.create), expect_handler=expect_handler(tus.CREATE))
    router.add_route("OPTIONS", "/files/{file_id}", tus.options)
    router.add_get("/files/{file_id}", files.download, allow_head=False)
    router.add_route("HEAD", "/files/{file_id}", tus.head)
    router.add_patch("/files/{file_id}", guarded(tus.PATCH, tus.patch), expect_handler=expect_handler(tus.PATCH))
    router.add_delete("/files/{file_id}", tus.delete)
    router.add_post("/files/{file_id}", tus.override, expect_handler=tus.expect_override)
    router.add_get("/files/{file_id}/info", files.file_info)
