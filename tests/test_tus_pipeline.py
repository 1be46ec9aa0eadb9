"""tus uploads go through the one pipeline: the same file record as one-shot, the type
decided on the first bytes however small the PATCHes, the size limit while streaming,
the SHA-256 right across PATCHes, mismatches and drops, nothing unfinished visible,
and bearer tokens that keep one client's uploads from another's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import random
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import ClientResponse
from support import Running, apoll, read_until_close, request_head, status_of

from uploadsrv.uploads.ingest import BATCH_BYTES

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"
NOT_MEDIA = random.Random(7).randbytes(64 << 10)


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


async def create(server: Running, length: int | None, headers: Mapping[str, str] | None = None) -> str:
    sent = {**TUS, **({"Upload-Defer-Length": "1"} if length is None else {"Upload-Length": str(length)})}
    response = await server.client.post("/files", headers={**sent, **(headers or {})})
    assert response.status == 201, await response.text()
    return urlsplit(response.headers["Location"]).path


async def patch(server: Running, path: str, offset: int, data: bytes, **headers: str) -> ClientResponse:
    # A BytesIO, as aiohttp's client asks for bodies over 1 MiB.
    return await server.client.patch(path, data=io.BytesIO(data), headers={
        **TUS, "Content-Type": OCTET, "Upload-Offset": str(offset), **headers})


async def head(server: Running, path: str, **headers: str) -> ClientResponse:
    return await server.client.head(path, headers={**TUS, **headers})


async def error_code(response: ClientResponse) -> str:
    return str((await response.json())["error"]["code"])


async def upload_in_pieces(server: Running, path: str, data: bytes, sizes: list[int]) -> int:
    """PATCH `data` in pieces of `sizes` (the rest in one last PATCH); each must be 204."""
    offset = 0
    for size in [*sizes, len(data)]:
        piece = data[offset:offset + size]
        if not piece:
            break
        response = await patch(server, path, offset, piece)
        assert response.status == 204, f"PATCH of {len(piece)} bytes at {offset}: {await response.text()}"
        offset += len(piece)
        assert response.headers["Upload-Offset"] == str(offset)
    return offset


def parts_in(server: Running) -> list[str]:
    return [name for name in server.temp() if name.endswith(".part")]


# -- one pipeline, one kind of record ----------------------------------------------------

@pytest.mark.parametrize("sent, filename", [
    ({"filename": "Take 1 — final.mp3", "description": "room A"}, "Take 1 — final.mp3"),
    ({"name": "voice.mp3", "filetype": "audio/mpeg"}, "voice.mp3"),
    ({"filename": "../../etc/passwd"}, "passwd"),
])
async def test_tus_upload_is_the_same_file_record_as_one_shot(start, mp3: bytes, sent: dict[str, str],
                                                              filename: str) -> None:
    """Filename from `filename` metadata (else `name`, never a path), all metadata in
    `fields`; the record is served by GET, /info, the listing, and DELETE removes it."""
    server = await start()
    path = await create(server, len(mp3), {"Upload-Metadata": metadata(**sent)})
    await upload_in_pieces(server, path, mp3, [4000])
    record = await (await server.client.get(f"{path}/info")).json()
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(mp3), filename=filename, content_type="application/octet-stream")
    oneshot = await (await server.client.post("/upload", data=form)).json()
    same = ("filename", "size", "sha256", "type", "mime")
    assert {key: record[key] for key in same} == {key: oneshot[key] for key in same}
    assert record["sha256"] == hashlib.sha256(mp3).hexdigest()
    assert record["fields"] == sent
    assert record["url"] == path and sorted(record) == sorted(oneshot)
    download = await server.client.get(path)
    assert download.status == 200 and await download.read() == mp3
    assert download.headers["Content-Type"] == "audio/mpeg"
    listed = (await (await server.client.get("/files")).json())["files"]
    assert record in listed
    assert (await server.client.delete(path)).status == 204
    assert (await server.client.get(path)).status == 404
    assert (await server.client.get(f"{path}/info")).status == 404
    assert record not in (await (await server.client.get("/files")).json())["files"]
    assert parts_in(server) == []


async def test_completed_upload_answers_tus_head_and_plain_head(start, mp3: bytes) -> None:
    """A tus HEAD of a completed upload: Upload-Offset == Upload-Length == size, metadata
    echoed canonically; a plain HEAD answers like GET without the body."""
    server = await start()
    path = await create(server, len(mp3), {"Upload-Metadata": f"{metadata(filename='a.mp3')},flag"})
    await upload_in_pieces(server, path, mp3, [])
    tus = await head(server, path)
    assert tus.status == 200
    assert tus.headers["Upload-Offset"] == tus.headers["Upload-Length"] == str(len(mp3))
    assert tus.headers["Upload-Metadata"] == f"{metadata(filename='a.mp3')},flag"
    plain = await server.client.head(path)
    assert plain.status == 200
    assert plain.headers["Content-Length"] == str(len(mp3))
    assert plain.headers["Content-Type"] == "audio/mpeg"
    assert "Upload-Offset" not in plain.headers
    assert await plain.read() == b""


# -- the type, decided on the first bytes ------------------------------------------------

async def test_type_is_decided_on_the_first_bytes_of_tiny_patches(start, mp3: bytes) -> None:
    """PATCHes of 5, 7, 11, ... bytes are each stored (204, not refused) until the head
    decides the type; the file is then the right type with the right SHA-256."""
    server = await start()
    path = await create(server, len(mp3))
    await upload_in_pieces(server, path, mp3, [5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53])
    record = await (await server.client.get(f"{path}/info")).json()
    assert (record["type"], record["size"]) == ("mp3", len(mp3))
    assert record["sha256"] == hashlib.sha256(mp3).hexdigest()


async def test_one_byte_patches_across_the_head_still_decide_the_type(start, mp3: bytes) -> None:
    """20 PATCHes of one byte each, then the rest: the head is read back from storage on
    every resume and the type is still decided."""
    server = await start()
    path = await create(server, len(mp3))
    await upload_in_pieces(server, path, mp3, [1] * 20)
    record = await (await server.client.get(f"{path}/info")).json()
    assert record["type"] == "mp3" and record["sha256"] == hashlib.sha256(mp3).hexdigest()


async def test_wrong_type_is_refused_with_415_and_the_upload_deleted(start) -> None:
    """Bytes that are no allowed type: 415 unsupported_file_type, the upload is gone
    (HEAD 404) and nothing is left on disk."""
    server = await start()
    path = await create(server, len(NOT_MEDIA) * 2)
    response = await patch(server, path, 0, NOT_MEDIA)
    assert response.status == 415 and await error_code(response) == "unsupported_file_type"
    assert (await head(server, path)).status == 404
    server.assert_nothing_left()


@pytest.mark.parametrize("case", ["wrong type", "checksum mismatch", "over its length"])
async def test_failed_creation_with_upload_leaves_nothing(start, mp3: bytes, case: str) -> None:
    """A POST with a body that fails (415, 460, 413) never told the client its URL, so
    the upload is removed. Our choice, like a failed one-shot upload."""
    server = await start()
    headers = {**TUS, "Content-Type": OCTET, "Upload-Length": str(len(mp3))}
    body = mp3
    if case == "wrong type":
        body, headers["Upload-Length"] = NOT_MEDIA, str(len(NOT_MEDIA))
    elif case == "checksum mismatch":
        headers["Upload-Checksum"] = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    else:
        headers["Upload-Length"] = "1000"
    response = await server.client.post("/files", data=body, headers=headers)
    expected = {"wrong type": 415, "checksum mismatch": 460, "over its length": 413}[case]
    assert response.status == expected, await response.text()
    server.assert_nothing_left()


async def test_concatenation_decides_the_type_on_the_final_upload(start) -> None:
    """Partials are not files: partials of a wrong-type file are accepted, the final is
    refused with 415 and nothing of it is left; the partials stay until deleted."""
    server = await start()
    partials = []
    for piece in (NOT_MEDIA[:40000], NOT_MEDIA[40000:]):
        path = await create(server, len(piece), {"Upload-Concat": "partial"})
        assert (await patch(server, path, 0, piece)).status == 204
        partials.append(path)
    response = await server.client.post("/files", headers={**TUS, "Upload-Concat": "final;" + " ".join(partials)})
    assert response.status == 415 and await error_code(response) == "unsupported_file_type"
    assert server.stored() == [] and len(parts_in(server)) == 2
    for path in partials:
        assert (await server.client.delete(path, headers=TUS)).status == 204
    server.assert_nothing_left()


# -- the size limit while streaming ------------------------------------------------------

def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def stream_chunked(port: int, head_bytes: bytes, first: bytes, limit: int) -> tuple[bytes, int]:
    """Send a chunked body (first, then noise) until the server answers; (answer, sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head_bytes + chunk(first))
    answer = asyncio.ensure_future(reader.read(65536))
    noise, sent = os.urandom(64 << 10), len(first)
    try:
        while not answer.done() and sent < limit:
            writer.write(chunk(noise))
            sent += len(noise)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.wait({answer, drain}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
    except ConnectionError:
        pass
    raw = await answer
    writer.close()
    return raw + await read_until_close(reader, 5), sent


async def test_chunked_patch_over_the_size_limit_stops_at_413(start, mp3: bytes) -> None:
    """A PATCH without Content-Length (chunked) to a deferred-length upload is stopped with
    413 as it crosses limits.max_file_size, long before the client is done; the file can
    never complete, so the upload is deleted (our choice, as for a refused type)."""
    server = await start(limits={"max_file_size": "1MiB"})
    path = await create(server, None)
    head_bytes = request_head("PATCH", path, {**TUS, "Content-Type": OCTET, "Upload-Offset": "0",
                                              "Transfer-Encoding": "chunked"})
    raw, sent = await stream_chunked(server.port, head_bytes, mp3, 256 << 20)
    assert status_of(raw) == 413 and b'"file_too_large"' in raw
    assert sent < 64 << 20
    assert (await head(server, path)).status == 404
    server.assert_nothing_left()


# -- the SHA-256 across requests ---------------------------------------------------------

async def test_sha256_is_right_after_a_checksum_mismatch(start, mp3: bytes) -> None:
    """Several PATCHes, one refused with 460 and sent again: the SHA-256 is the file's."""
    server = await start()
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:1500])).status == 204
    wrong = "sha256 " + base64.b64encode(hashlib.sha256(b"not these").digest()).decode()
    refused = await patch(server, path, 1500, mp3[1500:3000], **{"Upload-Checksum": wrong})
    assert refused.status == 460 and await error_code(refused) == "checksum_mismatch"
    right = "sha256 " + base64.b64encode(hashlib.sha256(mp3[1500:3000]).digest()).decode()
    assert (await patch(server, path, 1500, mp3[1500:3000], **{"Upload-Checksum": right})).status == 204
    assert (await patch(server, path, 3000, mp3[3000:])).status == 204
    record = await (await server.client.get(f"{path}/info")).json()
    assert record["sha256"] == hashlib.sha256(mp3).hexdigest()


async def test_dropped_patch_keeps_what_arrived_and_the_resumed_sha256_is_right(start, mp3: bytes) -> None:
    """A PATCH cut off partway: HEAD reports exactly the bytes that arrived (the stored
    part is that prefix), the client resumes there, and the file's SHA-256 is right.

    The cut comes after one whole ingest batch, once the part on disk shows the server
    has read it: bytes still in aiohttp's buffer when the connection drops are lost
    (see the report), and a test must not race that."""
    server = await start()
    data = mp3 + os.urandom(3 << 20)
    path = await create(server, len(data))
    assert (await patch(server, path, 0, data[:2000])).status == 204
    arrived = 2000 + BATCH_BYTES
    part = Path(server.config.storage.tmp_dir, f"{path.rsplit('/', 1)[1]}.part")
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_head("PATCH", path, {**TUS, "Content-Type": OCTET, "Upload-Offset": "2000",
                                              "Content-Length": str(len(data) - 2000)}) + data[2000:arrived])
    await writer.drain()
    await apoll(lambda: part.stat().st_size >= BATCH_BYTES)  # written only once all of it was read
    writer.close()
    offset = -1
    for _ in range(500):  # the cut-off request lets go of the upload, then HEAD answers
        response = await head(server, path)
        if response.status == 200 and (offset := int(response.headers["Upload-Offset"])) == arrived:
            break
        await asyncio.sleep(0.02)
    assert offset == arrived
    assert part.read_bytes() == data[:arrived]
    assert (await patch(server, path, arrived, data[arrived:])).status == 204
    record = await (await server.client.get(f"{path}/info")).json()
    assert (record["size"], record["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert await (await server.client.get(path)).read() == data


async def test_unfinished_upload_is_not_a_file(start, mp3: bytes) -> None:
    """Until its last byte, an upload is in no listing and GET / info answer 404."""
    server = await start()
    path = await create(server, len(mp3))
    assert (await patch(server, path, 0, mp3[:-1])).status == 204
    assert (await (await server.client.get("/files")).json())["files"] == []
    for target in (path, f"{path}/info"):
        response = await server.client.get(target)
        assert response.status == 404 and await error_code(response) == "not_found"
    assert server.stored() == []
    assert (await patch(server, path, len(mp3) - 1, mp3[-1:])).status == 204
    assert len((await (await server.client.get("/files")).json())["files"]) == 1


# -- bearer tokens -----------------------------------------------------------------------

async def test_every_tus_request_but_options_needs_a_token(start, mp3: bytes) -> None:
    """With auth.tokens, POST, HEAD, PATCH, DELETE and method overrides without a token
    get 401 JSON; OPTIONS (discovery) needs none."""
    server = await start(auth={"tokens": ["token-a"]})
    options = await server.client.options("/files")
    assert options.status == 204 and options.headers["Tus-Version"] == "1.0.0"
    path = await create(server, len(mp3), {"Authorization": "Bearer token-a"})
    for method, target, headers in (
        ("POST", "/files", {"Upload-Length": "10"}),
        ("HEAD", path, {}),
        ("PATCH", path, {"Content-Type": OCTET, "Upload-Offset": "0"}),
        ("DELETE", path, {}),
        ("POST", path, {"X-HTTP-Method-Override": "DELETE"}),
    ):
        response = await server.client.request(method, target, headers={**TUS, **headers},
                                               data=mp3[:10] if method == "PATCH" else None)
        assert response.status == 401, (method, target)
        assert response.headers["Tus-Resumable"] == "1.0.0"
        if method != "HEAD":
            assert await error_code(response) == "unauthorized"
    assert (await head(server, path, Authorization="Bearer token-a")).headers["Upload-Offset"] == "0"


async def test_an_upload_is_not_found_for_another_token(start, mp3: bytes) -> None:
    """An upload created with token A answers 404 to token B (HEAD, PATCH, DELETE, a plain
    HEAD) and keeps working with A."""
    server = await start(auth={"tokens": ["token-a", "token-b"]})
    a, b = {"Authorization": "Bearer token-a"}, {"Authorization": "Bearer token-b"}
    path = await create(server, len(mp3), a)
    assert (await patch(server, path, 0, mp3[:100], **a)).status == 204
    assert (await head(server, path, **b)).status == 404
    assert (await server.client.head(path, headers=b)).status == 404
    refused = await patch(server, path, 100, mp3[100:], **b)
    assert refused.status == 404 and await error_code(refused) == "not_found"
    deleted = await server.client.delete(path, headers={**TUS, **b})
    assert deleted.status == 404 and await error_code(deleted) == "not_found"
    assert (await head(server, path, **a)).headers["Upload-Offset"] == "100"
    assert (await patch(server, path, 100, mp3[100:], **a)).status == 204
    record = await (await server.client.get(f"{path}/info", headers=a)).json()
    assert record["sha256"] == hashlib.sha256(mp3).hexdigest()
