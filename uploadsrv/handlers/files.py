"""The files API and the small public endpoints: list, download, info, delete, health.

Owns how completed files are presented over HTTP (pagination, Range downloads streamed
from storage, safe Content-Disposition). It asks storage for records and bytes and never
builds a path.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from aiohttp import web

from ..appkeys import ACTIVE_UPLOADS, STORAGE
from ..errors import InvalidQuery
from ..ids import check_id
from ..storage import FileRecord

DEFAULT_PAGE = 50
MAX_PAGE = 1000


async def health(request: web.Request) -> web.Response:
    # Touches nothing but memory, so it answers while uploads keep the disk busy. The
    # count is the whole server's; "worker" is the pid of the process that answered.
    return web.json_response({"status": "ok", "uploads_in_progress": request.app[ACTIVE_UPLOADS].requests,
                              "worker": os.getpid()})


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
    record = await request.app[STORAGE].get(check_id(request.match_info["file_id"]))
    return web.json_response(record.to_json())


async def download(request: web.Request) -> web.StreamResponse:
    """The file's bytes (GET and plain HEAD), whole or one `Range`."""
    storage = request.app[STORAGE]
    record = await storage.get(check_id(request.match_info["file_id"]))
    etag = f'"{record.sha256[:32]}"'
    headers = {
        "Content-Type": record.mime,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(record),
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Accept-Ranges": "bytes",
        "ETag": etag,
    }
    start, end, status = 0, record.size, 200
    if "Range" in request.headers and request.headers.get("If-Range", etag) == etag:
        try:
            wanted = request.http_range
        except ValueError:
            wanted = slice(None, None)  # a Range we cannot read is ignored, as RFC 9110 allows
        if wanted.start is not None or wanted.stop is not None:
            start, end = _resolve(wanted, record.size)
            if start >= end:
                raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{record.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{record.size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    if request.method != "HEAD":
        async for chunk in storage.read_file(record, start, end):
            await response.write(chunk)
    await response.write_eof()
    return response


def _resolve(wanted: slice, size: int) -> tuple[int, int]:
    """aiohttp's parsed Range (suffix ranges come as a negative start) -> [start, end)."""
    start, stop = wanted.start, wanted.stop
    if start is not None and start < 0:
        return max(0, size + start), size
    start = start or 0
    end = size if stop is None else min(stop, size)
    return start, end


def content_disposition(record: FileRecord) -> str:
    """`inline` with an ASCII fallback name and the exact name in RFC 5987 form."""
    name = record.filename or f"{record.id}.{record.type}"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"

