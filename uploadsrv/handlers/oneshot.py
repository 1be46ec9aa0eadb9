"""`POST /upload` and `POST /upload-multiple`: one-shot multipart uploads.

Owns the flow of a one-shot upload: the form's file events drive one `UploadSession`
per file, and every file is committed (all or nothing) before the 201. Admission (401,
413, 415, 429, 507) is the route's policy, applied before the body.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from ..admission import RoutePolicy
from ..appkeys import CONFIG, STORAGE, UPLOADS
from ..body import BodyReader
from ..config import Config
from ..ids import new_upload_id
from ..multipart import MultipartForm, multipart_body_limit
from ..storage import FileRecord, UploadInfo
from ..uploads.ingest import IngestResult
from ..uploads.session import UploadServices, UploadSession, utc_now

SINGLE_FILE_FIELDS = ("file",)
MULTIPLE_FILE_FIELDS = ("files", "file")

_FORM = ("multipart/form-data",)
_HINT = "multipart/form-data (a form with a 'file' part)"
SINGLE = RoutePolicy("multipart", _FORM, _HINT, lambda config: multipart_body_limit(config.limits, 1))
MULTIPLE = RoutePolicy("multipart", _FORM, _HINT, lambda config: multipart_body_limit(
    config.limits, config.limits.max_files_per_request))


async def upload(request: web.Request) -> web.Response:
    [record] = await _receive(request, SINGLE_FILE_FIELDS, max_files=1)
    return web.json_response(record.to_json(), status=201, headers={"Location": record.url})


async def upload_multiple(request: web.Request) -> web.Response:
    max_files = request.app[CONFIG].limits.max_files_per_request
    records = await _receive(request, MULTIPLE_FILE_FIELDS, max_files=max_files)
    return web.json_response({"files": [record.to_json() for record in records]}, status=201)


class _Files:
    """The form's file events, each file an upload session of its own."""

    def __init__(self, services: UploadServices) -> None:
        self._services = services
        self.sessions: list[UploadSession] = []
        self.finished: list[tuple[UploadSession, str, IngestResult]] = []
        self._current: tuple[UploadSession, str] | None = None

    async def start_file(self, filename: str) -> None:
        info = UploadInfo(id=new_upload_id(), kind="multipart", created_at=utc_now(), filename=filename)
        session = await UploadSession.create(self._services, info)
        self.sessions.append(session)
        self._current = (session, filename)

    async def file_data(self, chunk: bytes) -> None:
        assert self._current is not None
        await self._current[0].append(chunk)

    async def end_file(self) -> None:
        assert self._current is not None
        session, filename = self._current
        self.finished.append((session, filename, await session.finish()))
        self._current = None

    async def close(self) -> None:
        """Release every session; files not committed by then are removed."""
        errors: list[BaseException] = []
        for session in self.sessions:
            try:
                await session.close()
            except Exception as error:  # close the others first, then report
                errors.append(error)
        if errors:
            raise errors[0]


async def _receive(request: web.Request, file_fields: Collection[str], *, max_files: int) -> list[FileRecord]:
    config: Config = request.app[CONFIG]
    files = _Files(request.app[UPLOADS])
    form = MultipartForm(
        request.headers.get("Content-Type", ""),
        file_fields=file_fields, max_files=max_files, limits=config.limits, sink=files,
        body_length=request.content_length,
    )
    reader = BodyReader(request.content, idle_timeout=config.limits.idle_timeout,
                        max_bytes=multipart_body_limit(config.limits, max_files))
    try:
        async with reader:
            while (chunk := await reader.read()) is not None:
                await form.feed(chunk)
        form.finish()
        return await _commit_all(request, files, form.fields)
    finally:
        await files.close()


async def _commit_all(request: web.Request, files: _Files, fields: dict[str, str]) -> list[FileRecord]:
    """Commit every file, or none: a failure part-way removes the ones already committed."""
    created_at = utc_now()
    committed: list[FileRecord] = []
    try:
        for session, filename, result in files.finished:
            committed.append(await session.commit(result, filename=filename, fields=fields,
                                                  created_at=created_at, announce=False))
    except BaseException:
        for record in committed:
            await request.app[STORAGE].delete(record.id)
        raise
    for session, _, _ in files.finished:
        session.announce()
    return committed
