"""`POST /upload` and `POST /upload-multiple`: one-shot multipart uploads.

Owns the flow of a one-shot upload: admission (429, 507), reading the body into a
`MultipartForm`, then committing every file (all or nothing) before answering 201. The
checks that need only the request head are here too, shared by the precheck middleware
and the `Expect: 100-continue` handler.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from aiohttp import web

from .admission import check_free_space
from .appkeys import ACTIVE_UPLOADS, CONFIG, IO_EXECUTOR, STORAGE
from .auth import check_token
from .body import BodyReader
from .config import LimitsConfig
from .errors import FileTooLarge, UnsupportedMediaType, UploadError, format_size
from .http_errors import error_response, refuse
from .multipart import MultipartForm, ReceivedFile, multipart_body_limit
from .storage import FileRecord, Storage

SINGLE_FILE_FIELDS = ("file",)
MULTIPLE_FILE_FIELDS = ("files", "file")


def _max_files(path: str, limits: LimitsConfig) -> int | None:
    return {"/upload": 1, "/upload-multiple": limits.max_files_per_request}.get(path)


def check_upload_head(request: web.BaseRequest, limits: LimitsConfig) -> None:
    """Refuse from the headers alone: wrong Content-Type (415), declared size too big (413)."""
    max_files = _max_files(request.path, limits)
    if max_files is None:
        return
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"{request.path} takes multipart/form-data (a form with a 'file' part), "
            f"not {request.content_type or 'a body without Content-Type'}"
        )
    limit = multipart_body_limit(limits, max_files)
    if request.content_length is not None and request.content_length > limit:
        per_file = format_size(limits.max_file_size)
        raise FileTooLarge(
            f"the upload ({format_size(request.content_length)}) is larger than this server accepts "
            f"(files up to {per_file} each)"
        )


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue` only when the upload can be accepted."""
    config = request.app[CONFIG]
    try:
        check_token(request, config.auth.tokens)
        check_upload_head(request, config.limits)
        request.app[ACTIVE_UPLOADS].check_room()
        await _check_disk(request)
    except UploadError as error:
        return await refuse(request, error_response(error))
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {request.headers.get('Expect')}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None


async def _check_disk(request: web.Request) -> None:
    free = await request.app[STORAGE].free_space()
    check_free_space(free, request.app[CONFIG].storage.min_free_space, request.content_length)


async def upload(request: web.Request) -> web.Response:
    [record] = await _receive(request, SINGLE_FILE_FIELDS, max_files=1)
    return web.json_response(record.to_json(), status=201, headers={"Location": record.url})


async def upload_multiple(request: web.Request) -> web.Response:
    max_files = request.app[CONFIG].limits.max_files_per_request
    records = await _receive(request, MULTIPLE_FILE_FIELDS, max_files=max_files)
    return web.json_response({"files": [record.to_json() for record in records]}, status=201)


async def _receive(request: web.Request, file_fields: Collection[str], *, max_files: int) -> list[FileRecord]:
    config = request.app[CONFIG]
    storage = request.app[STORAGE]
    active = request.app[ACTIVE_UPLOADS]
    with active.admit():
        await _check_disk(request)
        form = MultipartForm(
            request.headers.get("Content-Type", ""),
            file_fields=file_fields,
            max_files=max_files,
            limits=config.limits,
            allowed_types=config.types.allowed,
            storage=storage,
            executor=request.app[IO_EXECUTOR],
            active=active,
            body_length=request.content_length,
        )
        reader = BodyReader(
            request.content,
            idle_timeout=config.limits.idle_timeout,
            max_bytes=multipart_body_limit(config.limits, max_files),
        )
        try:
            async with reader:
                while (chunk := await reader.read()) is not None:
                    await form.feed(chunk)
            received = await form.finish()
            return await _commit_all(storage, received, form.fields)
        finally:
            await form.close()


async def _commit_all(storage: Storage, received: list[ReceivedFile], fields: dict[str, str]) -> list[FileRecord]:
    """Commit every file, or none: a failure part-way removes the ones already committed."""
    created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    committed: list[FileRecord] = []
    try:
        for item in received:
            record = FileRecord(
                id=item.upload_id,
                filename=item.filename,
                size=item.result.size,
                sha256=item.result.sha256,
                type=item.result.media.name,
                mime=item.result.media.mime,
                created_at=created_at,
                fields=dict(fields),
            )
            await storage.commit(record)
            committed.append(record)
    except BaseException:
        for record in committed:
            await storage.delete(record.id)
        raise
    return committed
