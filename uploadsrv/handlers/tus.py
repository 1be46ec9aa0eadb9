"""tus 1.0.0 at `/files/`: OPTIONS, POST (creation, with upload, concatenation), HEAD,
PATCH, DELETE, and `X-HTTP-Method-Override`.

Owns the protocol's flow: header rules come from `tus_rules`, the bytes go through an
`UploadSession` (the same lifecycle, pipeline and storage as one-shot uploads), and a
finished upload is committed as the same kind of file record. `/files/{id}` names an
upload while it is in progress and the file once complete, so HEAD and DELETE answer
for both.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ..admission import RoutePolicy, expect_handler, guarded
from ..appkeys import CONFIG, STORAGE, UPLOADS
from ..auth import bearer_token
from ..config import Config
from ..errors import FileTooLarge, FinalUpload, InvalidHeader, MissingFile, NotFound, OffsetMismatch, UnsupportedFileType
from ..ids import check_id, new_upload_id
from ..multipart import display_name
from ..storage import FileRecord, UploadInfo
from ..tus_rules import (
    CHECKSUM_ALGORITHMS, EXTENSIONS, OFFSET_STREAM, TUS_VERSION, check_length, check_version, format_metadata,
    http_date, parse_checksum, parse_creation, parse_number,
)
from ..uploads.session import UploadSession, inspect_upload, owner_of, terminate_upload, utc_now
from . import files
from .tus_transfer import receive


def _version_rule(request: web.BaseRequest, config: Config) -> None:
    check_version(request.headers)


def _has_body(request: web.BaseRequest) -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _declared_length(request: web.BaseRequest) -> int | None:
    try:
        return parse_number(request.headers.get("Upload-Length"), "Upload-Length") or request.content_length
    except InvalidHeader:
        return request.content_length


CREATE = RoutePolicy("tus", (OFFSET_STREAM,), f"{OFFSET_STREAM} (or no body)", lambda config: config.limits.max_file_size,
                     declared=_declared_length, head_rules=_version_rule, takes_slot=_has_body, body_optional=True)
PATCH = RoutePolicy("tus", (OFFSET_STREAM,), OFFSET_STREAM, lambda config: config.limits.max_file_size,
                    head_rules=_version_rule)


async def options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(request.app[CONFIG].limits.max_file_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    })


def _owner(request: web.Request) -> str:
    return owner_of(bearer_token(request)) if request.app[CONFIG].auth.tokens else ""


def _expires(request: web.Request) -> str:
    return http_date(time.time() + request.app[CONFIG].cleanup.partial_expiry)


def _base_url(request: web.Request) -> str:
    """Where the server is, for an absolute Location: the configured public URL, the
    trusted proxy's headers, or the request's own Host; "" (a relative Location) when even
    the Host is not a host name (a Location is never built around something else)."""
    server = request.app[CONFIG].server
    if server.public_url:
        return server.public_url
    scheme, host = request.scheme, request.host
    if server.trust_forwarded:
        forwarded_scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip().lower()
        forwarded_host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        if forwarded_scheme in ("http", "https") and _is_host(forwarded_host):
            scheme, host = forwarded_scheme, forwarded_host
    return f"{scheme}://{host}" if _is_host(host) else ""


def _is_host(host: str) -> bool:
    return bool(host) and not any(c in host for c in "/\\ \r\n\t@?#")


async def create(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    creation = parse_creation(request.headers, config.limits.max_file_size)
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    services = request.app[UPLOADS]
    name = display_name(creation.metadata.get("filename") or creation.metadata.get("name"))
    info = UploadInfo(
        id=new_upload_id(), kind="tus", created_at=utc_now(), length=creation.length,
        metadata=creation.metadata, metadata_header=creation.metadata_header, filename=name,
        owner=_owner(request), concat=creation.concat, partials=creation.partials,
    )
    if creation.concat == "final":
        info = await _final_info(request, info)
    elif creation.length == 0 and creation.concat != "partial":
        raise MissingFile("the upload is empty (Upload-Length: 0); choose a file with content")
    if creation.length is not None and (request.content_length or 0) > creation.length:
        raise FileTooLarge(f"the body is longer than its Upload-Length of {creation.length}")
    location = f"{_base_url(request)}/files/{info.id}"
    session = await UploadSession.create(services, info)
    headers = {"Location": location, "Upload-Expires": _expires(request)}
    try:
        if creation.concat == "final":
            await _concatenate(request, session)
        elif _has_body(request):
            headers["Upload-Offset"] = str(await _receive_first(request, session, checksum))
        else:
            headers["Upload-Offset"] = "0"
    finally:
        await session.close()
    return web.Response(status=201, headers=headers)


async def _receive_first(request: web.Request, session: UploadSession, checksum: tuple[str, bytes] | None) -> int:
    """The body of a creation request. If it fails (460, 413, 415, a cut-off), the client
    never learnt the upload's URL and cannot resume it: the upload is removed."""
    try:
        offset = await receive(request, session, checksum)
        await _complete_if_done(session, offset)
    except BaseException:
        if not session.committed:
            await asyncio.shield(session.terminate())
        raise
    return offset


async def _final_info(request: web.Request, info: UploadInfo) -> UploadInfo:
    """A final upload's length, from its partial uploads, which must all be complete."""
    storage = request.app[STORAGE]
    total = 0
    for partial_id in info.partials:
        try:
            partial = await storage.get_upload(partial_id)
            offset = await storage.upload_offset(partial_id)
        except NotFound:
            raise InvalidHeader(f"Upload-Concat names {partial_id!r}, which is not an unfinished upload here") from None
        if partial.concat != "partial" or (partial.owner and partial.owner != info.owner):
            raise InvalidHeader(f"Upload-Concat names {partial_id!r}, which is not a partial upload of yours")
        if partial.length is None or offset != partial.length:
            raise InvalidHeader(f"partial upload {partial_id!r} is not complete ({offset} bytes stored); "
                                "finish every partial upload before the final one")
        total += offset
    check_length(total, request.app[CONFIG].limits.max_file_size)
    if total == 0:
        raise MissingFile("the partial uploads are all empty; there is no file to store")
    return UploadInfo(**{**info.__dict__, "length": total})


async def _concatenate(request: web.Request, session: UploadSession) -> None:
    storage = request.app[STORAGE]
    try:
        for partial_id in session.info.partials:
            async for chunk in storage.read_upload(partial_id):
                await session.append(chunk)
    except UnsupportedFileType:
        await session.terminate()
        raise
    await _complete_if_done(session, session.offset)
    # tus lets a server remove partial uploads once concatenated: a parallel upload
    # would otherwise hold twice its size on disk until the partials expire.
    locks = request.app[UPLOADS].locks
    for partial_id in dict.fromkeys(session.info.partials):
        lock = await locks.try_acquire(partial_id)
        if lock is not None:
            try:
                await storage.terminate(partial_id)
            finally:
                await lock.release()


async def _complete_if_done(session: UploadSession, offset: int) -> FileRecord | None:
    """Commit the upload as a file once its last byte is stored (not a partial upload)."""
    info = session.info
    if info.length is None or offset != info.length or info.concat == "partial":
        return None
    try:
        result = await session.finish()
    except UnsupportedFileType:
        await session.terminate()
        raise
    return await session.commit(result, filename=info.filename, fields=info.metadata)


async def patch(request: web.Request) -> web.Response:
    upload_id = check_id(request.match_info["file_id"])
    claimed = parse_number(request.headers.get("Upload-Offset"), "Upload-Offset")
    if claimed is None:
        raise InvalidHeader("a PATCH needs Upload-Offset: the offset its bytes start at (ask HEAD for it)")
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    new_length = parse_number(request.headers.get("Upload-Length"), "Upload-Length")
    try:
        session = await UploadSession.resume(request.app[UPLOADS], upload_id, owner=_owner(request))
    except NotFound:
        return await _patch_completed(request, upload_id, claimed)
    try:
        info = session.info
        if info.concat == "final":
            raise FinalUpload("this is a final (concatenated) upload; it takes no PATCH")
        if claimed != session.offset:
            raise OffsetMismatch(f"the upload is at offset {session.offset}, not {claimed}; resume from there",
                                 headers={"Upload-Offset": str(session.offset)})
        if new_length is not None and new_length != info.length:
            await _set_length(request, session, new_length)
        if info.length is not None and (request.content_length or 0) > info.length - claimed:
            raise FileTooLarge(f"the body would take the upload past its Upload-Length of {info.length}")
        offset = await receive(request, session, checksum)
        await _complete_if_done(session, offset)
    finally:
        await session.close()
    return web.Response(status=204, headers={"Upload-Offset": str(offset), "Upload-Expires": _expires(request)})


async def _set_length(request: web.Request, session: UploadSession, length: int) -> None:
    if session.info.length is not None:
        raise InvalidHeader(f"Upload-Length is already {session.info.length}; it cannot change")
    check_length(length, request.app[CONFIG].limits.max_file_size)
    if length < session.offset:
        raise InvalidHeader(f"Upload-Length {length} is less than the {session.offset} bytes already stored")
    await session.save_info(UploadInfo(**{**session.info.__dict__, "length": length}))


async def _patch_completed(request: web.Request, upload_id: str, claimed: int) -> web.Response:
    """A PATCH to an upload that is a complete file already (a client retrying its last one)."""
    record = await request.app[STORAGE].get(upload_id)
    if record.upload_concat:
        raise FinalUpload("this is a final (concatenated) upload; it takes no PATCH")
    if claimed != record.size:
        raise OffsetMismatch(f"the upload is complete at offset {record.size}",
                             headers={"Upload-Offset": str(record.size)})
    if _has_body(request):
        raise FileTooLarge(f"the upload is complete ({record.size} bytes); it takes no more bytes")
    return web.Response(status=204, headers={"Upload-Offset": str(record.size)})


async def head(request: web.Request) -> web.StreamResponse:
    upload_id = check_id(request.match_info["file_id"])
    if "Tus-Resumable" not in request.headers:
        return await _plain_head(request, upload_id)
    check_version(request.headers)
    headers = {"Cache-Control": "no-store"}
    try:
        info, offset = await inspect_upload(request.app[UPLOADS], upload_id, owner=_owner(request))
    except NotFound:
        record = await request.app[STORAGE].get(upload_id)
        headers.update({"Upload-Offset": str(record.size), "Upload-Length": str(record.size)})
        if record.fields:
            headers["Upload-Metadata"] = format_metadata(record.fields)
        if record.upload_concat:
            headers["Upload-Concat"] = record.upload_concat
        return web.Response(status=200, headers=headers)
    headers["Upload-Offset"] = str(offset)
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
    if info.metadata_header:
        headers["Upload-Metadata"] = info.metadata_header
    if info.concat == "partial":
        headers["Upload-Concat"] = "partial"
    headers["Upload-Expires"] = _expires(request)
    return web.Response(status=200, headers=headers)


async def _plain_head(request: web.Request, upload_id: str) -> web.StreamResponse:
    """A HEAD without Tus-Resumable: a completed file's download headers (curl -I, a
    browser); for an upload in progress, which only tus speaks of, 412 (C2)."""
    try:
        return await files.download(request)
    except NotFound:
        try:
            info = await request.app[STORAGE].get_upload(upload_id)
        except NotFound:
            info = None
        if info is not None and info.owner in ("", _owner(request)):
            check_version(request.headers)
        raise


async def delete(request: web.Request) -> web.Response:
    """Terminate an unfinished upload, or delete a completed file."""
    upload_id = check_id(request.match_info["file_id"])
    if "Tus-Resumable" in request.headers:
        check_version(request.headers)
    try:
        await terminate_upload(request.app[UPLOADS], upload_id, owner=_owner(request))
    except NotFound:
        await request.app[STORAGE].delete(upload_id)
    return web.Response(status=204)


async def override(request: web.Request) -> web.StreamResponse:
    """POST with `X-HTTP-Method-Override` (clients behind proxies that allow only GET/POST)."""
    method = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
    if method == "PATCH":
        return await guarded(PATCH, patch)(request)
    if method == "DELETE":
        return await delete(request)
    if method == "HEAD":
        return await head(request)
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PATCH", "DELETE", "OPTIONS"])


expect_override = expect_handler(PATCH)
