"""tus 1.0.0 conformance at /files/, rule by rule, as /work/shared/notes/tus-checklist.md
numbers them (C1..C10 core, CR1..CR5 creation, the extensions by name, CO1..CO5
concatenation). Each test names the rule it checks; the protocol text is the reference,
our documented choices are said where the protocol leaves a choice.

Requests go over loopback to the real app, with aiohttp's client or, where the wire
itself matters (100 Continue, a cut-off body, a timeout), a raw socket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientResponse
from support import Running, apoll, read_until_close, request_head, status_of

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"
ALL_EXTENSIONS = {"creation", "creation-with-upload", "creation-defer-length", "termination", "expiration",
                  "checksum", "concatenation"}
HTTP_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                       r"\d{4} \d\d:\d\d:\d\d GMT$")


# -- helpers -----------------------------------------------------------------------------

async def create(server: Running, length: int | None, headers: Mapping[str, str] | None = None,
                 data: bytes | None = None) -> str:
    """A new upload's path (`/files/<id>`); `length=None` defers the length."""
    sent = {**TUS, **({"Upload-Defer-Length": "1"} if length is None else {"Upload-Length": str(length)})}
    if data is not None:
        sent["Content-Type"] = OCTET
    response = await server.client.post("/files", headers={**sent, **(headers or {})}, data=data)
    assert response.status == 201, await response.text()
    return urlsplit(response.headers["Location"]).path


async def patch(server: Running, path: str, offset: int, data: bytes, **headers: str) -> ClientResponse:
    return await server.client.patch(path, data=data, headers={
        **TUS, "Content-Type": OCTET, "Upload-Offset": str(offset), **headers})


async def head(server: Running, path: str) -> ClientResponse:
    return await server.client.head(path, headers=TUS)


async def offset_of(server: Running, path: str) -> int:
    response = await head(server, path)
    assert response.status == 200
    return int(response.headers["Upload-Offset"])


async def assert_error(response: ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error shape, and Tus-Resumable on it (C1)."""
    assert response.status == status, await response.text()
    assert response.headers["Tus-Resumable"] == "1.0.0"
    if response.method == "HEAD":
        return {}
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error["status"] == status and error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


def part_path(server: Running, path: str) -> Path:
    return Path(server.config.storage.tmp_dir) / f"{path.rsplit('/', 1)[1]}.part"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- core --------------------------------------------------------------------------------

async def test_c1_every_tus_response_carries_tus_resumable(start, mp3: bytes) -> None:
    """C1: Tus-Resumable: 1.0.0 on every response: OPTIONS, success and error alike."""
    server = await start()
    path = await create(server, len(mp3))
    responses = [
        await server.client.options("/files"),
        await head(server, path),
        await patch(server, path, 0, mp3[:100]),
        await patch(server, path, 0, mp3[:100]),  # 409
        await server.client.post("/files", headers={"Upload-Length": "10"}),  # 412
        await server.client.post("/files", headers={**TUS}),  # 400
        await head(server, "/files/unknown"),  # 404
        await server.client.delete(path, headers=TUS),
    ]
    assert [r.status for r in responses] == [204, 200, 204, 409, 412, 400, 404, 204]
    assert all(r.headers.get("Tus-Resumable") == "1.0.0" for r in responses)


@pytest.mark.parametrize("method, version", [
    (method, version) for method in ("POST", "PATCH", "HEAD", "DELETE") for version in (None, "0.2.2", "1.0.0, 0.2.2")
    if (method, version) != ("DELETE", None)
])
async def test_c2_missing_or_other_version_is_412_and_not_processed(start, mp3: bytes, method: str,
                                                                    version: str | None) -> None:
    """C2: a request without Tus-Resumable 1.0.0 gets 412 + Tus-Version and is not processed.

    Our choice: a HEAD or DELETE without Tus-Resumable is the files API's for a completed
    file (download headers, delete). For an upload in progress a HEAD without it is 412;
    a DELETE without it terminates the upload (DELETE /files/{id} in the contract), so
    only a DELETE with another version is 412."""
    server = await start()
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:50])).status == 204
    headers = {} if version is None else {"Tus-Resumable": version}
    if method == "POST":
        response = await server.client.post("/files", headers={"Upload-Length": "10", **headers})
    elif method == "PATCH":
        response = await server.client.patch(path, data=mp3[50:], headers={
            "Content-Type": OCTET, "Upload-Offset": "50", **headers})
    else:
        response = await server.client.request(method, path, headers=headers)
    await assert_error(response, 412, "unsupported_version")
    assert response.headers["Tus-Version"] == "1.0.0"
    assert await offset_of(server, path) == 50  # untouched, still there
    assert part_path(server, path).stat().st_size == 50
    if method == "POST":
        assert len([n for n in server.temp() if n.endswith(".part")]) == 1


@pytest.mark.parametrize("target", ["/files", "/files/", "/files/someid"])
async def test_c3_options_advertises_version_extensions_limits_and_ignores_tus_resumable(start, target: str) -> None:
    """C3 (+ checksum, expiration): OPTIONS answers 204 with Tus-Version, every extension,
    Tus-Max-Size and Tus-Checksum-Algorithm, whatever Tus-Resumable the request sent."""
    server = await start(limits={"max_file_size": "3MiB"})
    response = await server.client.options(target, headers={"Tus-Resumable": "0.0.1"})
    assert response.status == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == ALL_EXTENSIONS
    assert response.headers["Tus-Max-Size"] == str(3 << 20)
    assert response.headers["Tus-Checksum-Algorithm"].split(",") == ["sha1", "sha256", "md5"]


async def test_c4_head_reports_offset_length_metadata_and_no_store(start, mp3: bytes) -> None:
    """C4: HEAD 200 with Upload-Offset (0 too), Upload-Length, Upload-Metadata echoed,
    Cache-Control: no-store; an unknown upload is 404 without Upload-Offset."""
    server = await start()
    metadata = f"filename {b64(b'take 1.mp3')},flag"
    path = await create(server, len(mp3), {"Upload-Metadata": metadata})
    response = await head(server, path)
    assert response.status == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == str(len(mp3))
    assert response.headers["Upload-Metadata"] == metadata
    assert response.headers["Cache-Control"] == "no-store"
    assert "Upload-Defer-Length" not in response.headers
    assert await response.read() == b""
    assert (await patch(server, path, 0, mp3[:123])).status == 204
    assert (await head(server, path)).headers["Upload-Offset"] == "123"
    unknown = await head(server, "/files/AAAAAAAAAAAAAAAAAAAAAA")
    await assert_error(unknown, 404)
    assert "Upload-Offset" not in unknown.headers


async def test_c5_patch_without_offset_stream_content_type_is_415(start, mp3: bytes) -> None:
    """C5: a PATCH body that is not application/offset+octet-stream gets 415, nothing stored."""
    server = await start()
    path = await create(server, len(mp3))
    for content_type in ("application/octet-stream", "text/plain"):
        response = await server.client.patch(path, data=mp3, headers={
            **TUS, "Content-Type": content_type, "Upload-Offset": "0"})
        await assert_error(response, 415, "unsupported_media_type")
    assert await offset_of(server, path) == 0
    assert part_path(server, path).stat().st_size == 0


async def test_c6_patch_at_the_wrong_offset_is_409_and_changes_nothing(start, mp3: bytes) -> None:
    """C6: Upload-Offset other than the server's gets 409; the upload is untouched."""
    server = await start()
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:100])).status == 204
    before = part_path(server, path).read_bytes()
    for claimed in (0, 99, 101, 5000):
        response = await patch(server, path, claimed, mp3[claimed:claimed + 50])
        await assert_error(response, 409, "offset_mismatch")
    assert part_path(server, path).read_bytes() == before == mp3[:100]
    assert await offset_of(server, path) == 100


async def test_c7_patch_answers_204_with_the_new_offset_and_404_when_unknown(start, mp3: bytes) -> None:
    """C7: a PATCH that stores its bytes answers 204 with Upload-Offset = old + received;
    a PATCH to an unknown upload answers 404."""
    server = await start()
    path = await create(server, len(mp3))
    first = await patch(server, path, 0, mp3[:1000])
    assert first.status == 204 and first.headers["Upload-Offset"] == "1000"
    second = await patch(server, path, 1000, mp3[1000:1500])
    assert second.status == 204 and second.headers["Upload-Offset"] == "1500"
    await assert_error(await patch(server, "/files/AAAAAAAAAAAAAAAAAAAAAA", 0, mp3[:10]), 404, "not_found")


async def test_c8_interrupted_patch_keeps_what_arrived_and_a_timeout_closes(start, mp3: bytes) -> None:
    """C8: the bytes of a PATCH that went silent are kept (HEAD reports them), and the
    idle timeout answers 408 and closes the connection."""
    server = await start(limits={"idle_timeout": 0.3})
    path = await create(server, len(mp3))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_head("PATCH", path, {**TUS, "Content-Type": OCTET, "Upload-Offset": "0",
                                              "Content-Length": str(len(mp3))}) + mp3[:700])
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: the server closed
    writer.close()
    assert status_of(raw) == 408
    assert b'"upload_timeout"' in raw
    assert await offset_of(server, path) == 700
    assert part_path(server, path).read_bytes() == mp3[:700]


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "+5", "0x10", "", "1 2", "99999999999999999999"])
async def test_c9_offset_and_length_must_be_non_negative_integers(start, mp3: bytes, value: str) -> None:
    """C9: Upload-Offset and Upload-Length other than a non-negative integer get 400."""
    server = await start()
    await assert_error(await server.client.post("/files", headers={**TUS, "Upload-Length": value}), 400)
    path = await create(server, None)
    await assert_error(await patch(server, path, 0, mp3[:10], **{"Upload-Offset": value}), 400)
    await assert_error(await patch(server, path, 0, mp3[:10], **{"Upload-Length": value}), 400)
    assert await offset_of(server, path) == 0
    assert len([n for n in server.temp() if n.endswith(".part")]) == 1


async def test_c10_method_override_turns_post_into_patch_head_and_delete(start, mp3: bytes) -> None:
    """C10: POST with X-HTTP-Method-Override: PATCH / HEAD / DELETE acts as that method."""
    server = await start()
    path = await create(server, len(mp3))
    patched = await server.client.post(path, data=mp3[:300], headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Content-Type": OCTET, "Upload-Offset": "0"})
    assert patched.status == 204 and patched.headers["Upload-Offset"] == "300"
    headed = await server.client.post(path, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert headed.status == 200 and headed.headers["Upload-Offset"] == "300"
    assert headed.headers["Upload-Length"] == str(len(mp3))
    deleted = await server.client.post(path, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status == 204
    await assert_error(await head(server, path), 404)
    await assert_error(await server.client.post(path, headers={**TUS, "X-HTTP-Method-Override": "PUT"}), 405)


# -- creation ----------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Upload-Defer-Length": "0"},
    {"Upload-Defer-Length": "2"},
    {"Upload-Defer-Length": "yes"},
    {"Upload-Length": "100", "Upload-Defer-Length": "1"},
])
async def test_cr1_creation_needs_exactly_one_of_length_or_defer_1(start, headers: dict[str, str]) -> None:
    """CR1: POST needs Upload-Length or Upload-Defer-Length: 1, not both, not another
    defer value: 400 otherwise, and nothing is created."""
    server = await start()
    await assert_error(await server.client.post("/files", headers={**TUS, **headers}), 400, "invalid_header")
    server.assert_nothing_left()


async def test_cr2_length_over_the_limit_is_413_even_before_100_continue(start) -> None:
    """CR2: Upload-Length over limits.max_file_size gets 413; with Expect: 100-continue the
    413 comes instead of 100 Continue."""
    server = await start(limits={"max_file_size": "1MiB"})
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": str((1 << 20) + 1)})
    await assert_error(response, 413, "file_too_large")
    assert (await server.client.post("/files", headers={**TUS, "Upload-Length": str(1 << 20)})).status == 201
    head_bytes = request_head("POST", "/files", {**TUS, "Upload-Length": str(5 << 30), "Content-Type": OCTET,
                                                 "Content-Length": str(5 << 30), "Expect": "100-continue"})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head_bytes)
    raw = await read_until_close(reader, 5)
    writer.close()
    assert b"100 Continue" not in raw
    assert status_of(raw) == 413 and b'"file_too_large"' in raw


async def test_cr3_creation_is_201_with_an_absolute_location_at_offset_0(start) -> None:
    """CR3: 201 Created + Location (absolute, on this server) of a new upload at offset 0."""
    server = await start()
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": "1000"})
    assert response.status == 201
    location = response.headers["Location"]
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port}/files/[A-Za-z0-9_-]{{16,64}}", location)
    assert await offset_of(server, urlsplit(location).path) == 0


async def test_cr4_zero_length_upload_is_refused_as_missing_file(start) -> None:
    """CR4: Upload-Length: 0 would complete the upload at creation. Our documented choice:
    an empty file is not media, so it is refused with 400 missing_file and nothing is kept."""
    server = await start()
    await assert_error(await server.client.post("/files", headers={**TUS, "Upload-Length": "0"}), 400, "missing_file")
    server.assert_nothing_left()


SMUGGLED = b64(b"x\r\nSet-Cookie: a=b")


@pytest.mark.parametrize("metadata, echoed", [
    (f"filename {b64(b'a.mp3')},is_confidential", f"filename {b64(b'a.mp3')},is_confidential"),
    (f" filename {b64(b'a.mp3')} ,  empty ", f"filename {b64(b'a.mp3')},empty"),
    (f"note {SMUGGLED}", f"note {SMUGGLED}"),  # CR LF inside a value stays base64 on the way back
    ("filename !!notbase64", None),
    (f"filename {b64(b'a')},filename {b64(b'b')}", None),
    (f"file name {b64(b'a')}", None),
    (f"{b64(b'a')}", "YQ=="),
    (",", None),
    (f"key {b64(b'a')},", None),  # a trailing comma leaves an empty key
    ("k\u00e9y YQ==", None),
])
async def test_cr5_metadata_is_validated_and_echoed_canonically(start, metadata: str, echoed: str | None) -> None:
    """CR5: Upload-Metadata is `key base64`, comma separated; unique keys without spaces or
    commas; a key may go without value. Malformed metadata is 400. HEAD echoes it in
    canonical form, rebuilt from the validated parts, so it cannot smuggle a header."""
    server = await start()
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": "10", "Upload-Metadata": metadata})
    if echoed is None:
        await assert_error(response, 400, "invalid_header")
        server.assert_nothing_left()
        return
    assert response.status == 201, await response.text()
    answer = await head(server, urlsplit(response.headers["Location"]).path)
    assert answer.headers["Upload-Metadata"] == echoed
    assert "Set-Cookie" not in answer.headers


async def test_cr5_metadata_cannot_inject_a_header_on_the_wire(start) -> None:
    """CR5 (header smuggling): a raw request whose metadata tries CR/LF gets no second
    header in any answer: a bare CR or an obs-fold line is refused, never echoed."""
    server = await start()
    for metadata in (b"filename YQ==\rX-Evil: 1", b"filename YQ==\r\n X-Evil: 1"):
        raw_head = (b"POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\n"
                    b"Connection: close\r\nUpload-Metadata: " + metadata + b"\r\n\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw_head)
        raw = await read_until_close(reader, 5)
        writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 ", status_line), raw[:300]
        assert b"X-Evil" not in rest.split(b"\r\n\r\n")[0]
    server.assert_nothing_left()


# -- creation-defer-length ---------------------------------------------------------------

async def test_defer_length_is_set_by_a_later_patch_and_never_changes(start, mp3: bytes) -> None:
    """creation-defer-length: HEAD says Upload-Defer-Length: 1 until a PATCH sets
    Upload-Length; once set it cannot change (400), and the upload completes at it."""
    server = await start()
    path = await create(server, None)
    response = await head(server, path)
    assert response.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in response.headers
    assert (await patch(server, path, 0, mp3[:1000])).status == 204
    assert "Upload-Length" not in (await head(server, path)).headers
    assert (await patch(server, path, 1000, mp3[1000:2000], **{"Upload-Length": str(len(mp3))})).status == 204
    response = await head(server, path)
    assert response.headers["Upload-Length"] == str(len(mp3)) and "Upload-Defer-Length" not in response.headers
    changed = await patch(server, path, 2000, mp3[2000:], **{"Upload-Length": str(len(mp3) + 1)})
    await assert_error(changed, 400, "invalid_header")
    assert await offset_of(server, path) == 2000
    done = await patch(server, path, 2000, mp3[2000:], **{"Upload-Length": str(len(mp3))})
    assert done.status == 204 and done.headers["Upload-Offset"] == str(len(mp3))
    info = await (await server.client.get(f"{path}/info")).json()
    assert info["size"] == len(mp3) and info["sha256"] == hashlib.sha256(mp3).hexdigest()


# -- creation-with-upload ----------------------------------------------------------------

async def test_creation_with_upload_stores_the_body_and_answers_100_continue(start, mp3: bytes) -> None:
    """creation-with-upload: POST with an offset+octet-stream body answers 201 + Location +
    Upload-Offset; `Expect: 100-continue` is answered with 100 when the upload is acceptable."""
    server = await start()
    response = await server.client.post("/files", data=mp3[:800], headers={
        **TUS, "Upload-Length": str(len(mp3)), "Content-Type": OCTET})
    assert response.status == 201 and response.headers["Upload-Offset"] == "800"
    assert await offset_of(server, urlsplit(response.headers["Location"]).path) == 800

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_head("POST", "/files", {
        **TUS, "Upload-Length": str(len(mp3)), "Content-Type": OCTET, "Content-Length": str(len(mp3)),
        "Expect": "100-continue", "Connection": "close"}))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(mp3)
    raw = await read_until_close(reader, 5)
    writer.close()
    assert status_of(raw) == 201
    assert f"Upload-Offset: {len(mp3)}\r\n".encode() in raw


# -- expiration --------------------------------------------------------------------------

async def test_expiration_upload_expires_is_an_http_date_on_post_and_patch(start, mp3: bytes) -> None:
    """expiration: Upload-Expires, an RFC 9110 HTTP-date in the future, on POST and PATCH."""
    server = await start(cleanup={"partial_expiry": "1h"})
    created = await server.client.post("/files", headers={**TUS, "Upload-Length": str(len(mp3))})
    patched = await patch(server, urlsplit(created.headers["Location"]).path, 0, mp3[:100])
    for response in (created, patched):
        value = response.headers["Upload-Expires"]
        assert HTTP_DATE.match(value), value
        expires = parsedate_to_datetime(value).timestamp()
        assert time.time() + 3500 < expires < time.time() + 3700


async def test_expiration_an_idle_upload_is_gone_with_404(start, mp3: bytes) -> None:
    """expiration: an upload idle longer than cleanup.partial_expiry answers 404 to HEAD,
    PATCH and DELETE and its files are removed. (Aged with os.utime, not by waiting.)"""
    server = await start(cleanup={"partial_expiry": "1s"})
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:100])).status == 204
    old = time.time() - 60
    os.utime(part_path(server, path), (old, old))
    await assert_error(await head(server, path), 404)
    await assert_error(await patch(server, path, 100, mp3[100:200]), 404, "not_found")
    await assert_error(await server.client.delete(path, headers=TUS), 404, "not_found")
    server.assert_nothing_left()


# -- checksum ----------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
async def test_checksum_matching_body_is_stored_with_204(start, mp3: bytes, algorithm: str) -> None:
    """checksum: a PATCH whose Upload-Checksum (sha1, sha256, md5) matches its body: 204."""
    server = await start()
    path = await create(server, len(mp3))
    digest = b64(hashlib.new(algorithm, mp3[:1000]).digest())
    response = await patch(server, path, 0, mp3[:1000], **{"Upload-Checksum": f"{algorithm} {digest}"})
    assert response.status == 204 and response.headers["Upload-Offset"] == "1000"


@pytest.mark.parametrize("checksum, status, code", [
    (f"sha1 {b64(hashlib.sha1(b'other bytes').digest())}", 460, "checksum_mismatch"),
    (f"sha256 {b64(hashlib.sha256(b'other bytes').digest())}", 460, "checksum_mismatch"),
    (f"crc32 {b64(b'1234')}", 400, "unsupported_checksum_algorithm"),
    (f"SHA1 {b64(hashlib.sha1(b'x').digest())}", 400, "unsupported_checksum_algorithm"),
    ("sha1 not*base64", 400, "invalid_header"),
    (f"sha1 {b64(b'short')}", 400, "invalid_header"),
    ("sha1", 400, "invalid_header"),
])
async def test_checksum_mismatch_460_and_bad_algorithm_400_leave_the_offset(start, mp3: bytes, checksum: str,
                                                                           status: int, code: str) -> None:
    """checksum: mismatch -> 460 checksum_mismatch; an unknown algorithm or a malformed
    header -> 400. The chunk is discarded and the offset unchanged (HEAD and the part
    prove it); the same bytes with the right checksum are then taken."""
    server = await start()
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:100])).status == 204
    await assert_error(await patch(server, path, 100, mp3[100:1000], **{"Upload-Checksum": checksum}), status, code)
    assert await offset_of(server, path) == 100
    assert part_path(server, path).read_bytes() == mp3[:100]
    good = f"sha1 {b64(hashlib.sha1(mp3[100:1000]).digest())}"
    assert (await patch(server, path, 100, mp3[100:1000], **{"Upload-Checksum": good})).status == 204


# -- termination -------------------------------------------------------------------------

async def test_termination_delete_is_204_then_head_and_patch_are_404(start, mp3: bytes) -> None:
    """termination: DELETE answers 204 and frees everything; later HEAD/PATCH/DELETE: 404."""
    server = await start()
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:500])).status == 204
    assert (await server.client.delete(path, headers=TUS)).status == 204
    await assert_error(await head(server, path), 404)
    await assert_error(await patch(server, path, 500, mp3[500:]), 404, "not_found")
    await assert_error(await server.client.delete(path, headers=TUS), 404, "not_found")
    server.assert_nothing_left()


# -- concatenation -----------------------------------------------------------------------

async def partial(server: Running, data: bytes) -> str:
    path = await create(server, len(data), {"Upload-Concat": "partial", "Upload-Metadata": f"filename {b64(b'p')}"})
    assert (await patch(server, path, 0, data)).status == 204
    return path


async def test_co1_partial_upload_is_created_and_head_echoes_upload_concat(start, mp3: bytes) -> None:
    """CO1 (+ CO4 for partials): POST Upload-Concat: partial + Upload-Length creates a
    partial upload; its HEAD echoes Upload-Concat: partial and always has Upload-Offset."""
    server = await start()
    path = await create(server, 1000, {"Upload-Concat": "partial"})
    response = await head(server, path)
    assert response.headers["Upload-Concat"] == "partial" and response.headers["Upload-Offset"] == "0"
    assert (await patch(server, path, 0, mp3[:1000])).status == 204
    response = await head(server, path)
    assert response.headers["Upload-Concat"] == "partial" and response.headers["Upload-Offset"] == "1000"
    assert (await server.client.get("/files")).status == 200
    assert (await (await server.client.get("/files")).json())["files"] == []  # a partial is not a file


@pytest.mark.parametrize("form", ["relative", "absolute", "repeated"])
async def test_co2_final_upload_is_the_concatenation_of_its_partials(start, mp3: bytes, form: str) -> None:
    """CO2: Upload-Concat: final;<url> <url> (relative or absolute; a partial may repeat)
    answers 201 and the file is the partials' bytes in order: size, sha256, bytes, type.
    Partials' metadata is not inherited; the final's own is the file's."""
    server = await start()
    first, second = await partial(server, mp3[:1500]), await partial(server, mp3[1500:])
    base = f"http://127.0.0.1:{server.port}" if form == "absolute" else ""
    urls = [first, second] if form != "repeated" else [first, second, second]
    expected = mp3 if form != "repeated" else mp3 + mp3[1500:]
    response = await server.client.post("/files", headers={
        **TUS, "Upload-Concat": "final;" + " ".join(base + url for url in urls),
        "Upload-Metadata": f"filename {b64(b'whole.mp3')}"})
    assert response.status == 201, await response.text()
    final = urlsplit(response.headers["Location"]).path
    record = await (await server.client.get(f"{final}/info")).json()
    assert (record["size"], record["sha256"]) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert (record["type"], record["filename"], record["fields"]) == ("mp3", "whole.mp3", {"filename": "whole.mp3"})
    assert await (await server.client.get(final)).read() == expected
    answer = await head(server, final)
    assert answer.headers["Upload-Offset"] == answer.headers["Upload-Length"] == str(len(expected))


async def test_co3_patch_to_a_final_upload_is_403_and_modifies_nothing(start, mp3: bytes) -> None:
    """CO3 (+ CO4 for finals): a PATCH to a final upload answers 403 final_upload and
    changes nothing; HEAD of the final echoes its Upload-Concat."""
    server = await start()
    first, second = await partial(server, mp3[:1500]), await partial(server, mp3[1500:])
    response = await server.client.post("/files", headers={**TUS, "Upload-Concat": f"final;{first} {second}"})
    final = urlsplit(response.headers["Location"]).path
    before = await (await server.client.get(f"{final}/info")).json()
    for offset in (0, len(mp3)):
        await assert_error(await patch(server, final, offset, b"more"), 403, "final_upload")
    assert await (await server.client.get(f"{final}/info")).json() == before
    assert await (await server.client.get(final)).read() == mp3
    assert (await head(server, final)).headers["Upload-Concat"] == f"final;{first} {second}"


async def test_co5_final_needs_finished_known_partials(start, mp3: bytes) -> None:
    """CO5 (+ CO2 errors): concatenation-unfinished is not advertised, so a final naming
    an unfinished partial is 400, as is one naming an unknown upload, a non-partial upload,
    or one with an Upload-Length; nothing is created."""
    server = await start()
    done = await partial(server, mp3[:1500])
    unfinished = await create(server, 5000, {"Upload-Concat": "partial"})
    plain = await create(server, len(mp3))
    options = await server.client.options("/files")
    assert "concatenation-unfinished" not in options.headers["Tus-Extension"].split(",")
    for headers in (
        {"Upload-Concat": f"final;{done} {unfinished}"},
        {"Upload-Concat": f"final;{done} /files/AAAAAAAAAAAAAAAAAAAAAA"},
        {"Upload-Concat": f"final;{done} {plain}"},
        {"Upload-Concat": f"final;{done} /elsewhere/x"},
        {"Upload-Concat": "final;"},
        {"Upload-Concat": "whole"},
        {"Upload-Concat": f"final;{done}", "Upload-Length": "1500"},
    ):
        await assert_error(await server.client.post("/files", headers={**TUS, **headers}), 400, "invalid_header")
    await apoll(lambda: len([n for n in server.temp() if n.endswith(".part")]) == 3)
    assert server.stored() == []
