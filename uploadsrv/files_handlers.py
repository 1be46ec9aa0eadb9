"""The files API and the small public endpoints: list, download, info, delete, health.

Owns how completed files are presented over HTTP (pagination, Range downloads through
sendfile, safe Content-Disposition). It asks storage for records and never builds a path.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from .appkeys import ACTIVE_UPLOADS, STORAGE
from .errors import InvalidQuery
from .storage import FileRecord

DEFAULT_PAGE = 50
MAX_PAGE = 1000


async def health(request: web.Request) -> web.Response:
    # Touches nothing but memory, so it answers while uploads keep the disk busy.
    return web.json_response({"status": "ok", "uploads_in_progress": request.app[ACTIVE_UPLOADS].requests})


async def list_files(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise InvalidQuery(f"limit must be a whole number from 1 to {MAX_PAGE}")
    try:
        records, cursor = await request.app[STORAGE].list_files(int(raw_limit), request.query.get("cursor"))
    except ValueError as error:
        raise InvalidQuery(f"{error}; start again without cursor") from None
    body: dict[str, object] = {"files": [record.to_json() for record in records], "next_cursor": cursor}
    if cursor:
        body["next"] = f"/files?limit={raw_limit}&cursor={cursor}"
    return web.json_response(body)


async def file_info(request: web.Request) -> web.Response:
    record = await request.app[STORAGE].get(request.match_info["file_id"])
    return web.json_response(record.to_json())


async def download(request: web.Request) -> web.FileResponse:
    storage = request.app[STORAGE]
    record = await storage.get(request.match_info["file_id"])
    headers = {
        "Content-Type": record.mime,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(record),
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    # FileResponse serves Range and If-Range itself, through sendfile off the loop.
    return web.FileResponse(storage.content_path(record), headers=headers)


async def delete_file(request: web.Request) -> web.Response:
    await request.app[STORAGE].delete(request.match_info["file_id"])
    return web.Response(status=204)


def content_disposition(record: FileRecord) -> str:
    """`inline` with an ASCII fallback name and the exact name in RFC 5987 form."""
    name = record.filename or f"{record.id}.{record.type}"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
