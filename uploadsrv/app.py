"""The application factory: it only wires config, state, middlewares and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import files_handlers, page, upload_handlers
from .admission import ActiveUploads
from .appkeys import ACTIVE_UPLOADS, CONFIG, IO_EXECUTOR, PAGE, STORAGE
from .cleanup import cleanup_context
from .config import Config
from .middlewares import auth_middleware, error_middleware, upload_precheck_middleware
from .storage import FilesystemStorage

# Enough threads for several uploads' batches to hash and write at once on 2+ cores,
# few enough that a burst of uploads cannot spawn an unbounded number of writers.
IO_THREADS = 8


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware, upload_precheck_middleware])
    app[CONFIG] = config
    app[ACTIVE_UPLOADS] = ActiveUploads(config.limits.max_concurrent_uploads)
    app[PAGE] = page.load_page()
    app.cleanup_ctx.append(_storage_context)
    app.cleanup_ctx.append(cleanup_context)
    _add_routes(app)
    return app


async def _storage_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="uploadsrv-io")
    storage = FilesystemStorage(config.storage.dir, config.storage.tmp_dir, executor)
    storage.prepare()
    app[IO_EXECUTOR] = executor
    app[STORAGE] = storage
    yield
    executor.shutdown(wait=True)


def _add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", page.index)
    router.add_get("/health", files_handlers.health)
    router.add_post("/upload", upload_handlers.upload, expect_handler=upload_handlers.expect_upload)
    router.add_post("/upload-multiple", upload_handlers.upload_multiple, expect_handler=upload_handlers.expect_upload)
    router.add_get("/files", files_handlers.list_files)
    router.add_get("/files/{file_id}", files_handlers.download)
    router.add_get("/files/{file_id}/info", files_handlers.file_info)
    router.add_delete("/files/{file_id}", files_handlers.delete_file)
