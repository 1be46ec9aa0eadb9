"""POST /upload and /upload-multiple against the real app: what is stored, and what is not."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support import FORM_CONTENT_TYPE, form, part

EXPECTED_TYPES = {
    "mp3_id3": ("mp3", "audio/mpeg"),
    "wav": ("wav", "audio/wav"),
    "flac": ("flac", "audio/flac"),
    "ogg_vorbis": ("ogg", "audio/ogg"),
    "mp4": ("mp4", "video/mp4"),
    "m4a": ("m4a", "audio/mp4"),
    "mov": ("mov", "video/quicktime"),
    "webm": ("webm", "video/webm"),
}


def file_form(data: bytes, filename: str = "song.mp3", **fields: str) -> aiohttp.FormData:
    body = aiohttp.FormData()
    for name, value in fields.items():
        body.add_field(name, value)
    body.add_field("file", io.BytesIO(data), filename=filename, content_type="application/octet-stream")
    return body


async def test_upload_stores_file_and_record_and_answers_201(start, mp3: bytes) -> None:
    server = await start()
    payload = mp3 + os.urandom(3 << 20)
    response = await server.client.post("/upload", data=file_form(payload, "Привет мир.mp3", description="take 1"))
    assert response.status == 201, await response.text()
    record = await response.json()
    assert record["size"] == len(payload)
    assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (record["type"], record["mime"]) == ("mp3", "audio/mpeg")
    assert record["filename"] == "Привет мир.mp3"
    assert record["fields"] == {"description": "take 1"}
    assert record["url"] == f"/files/{record['id']}"
    assert response.headers["Location"] == record["url"]
    assert record["created_at"].endswith("Z")
    content = Path(server.config.storage.dir) / f"{record['id']}.mp3"
    assert hashlib.sha256(content.read_bytes()).hexdigest() == record["sha256"]
    on_disk = json.loads((Path(server.config.storage.dir) / f"{record['id']}.json").read_text())
    assert on_disk == record
    assert server.temp() == []


@pytest.mark.parametrize("sample", sorted(EXPECTED_TYPES))
async def test_each_allowed_type_is_stored_with_its_detected_type(start, media_samples, sample: str) -> None:
    server = await start()
    data = media_samples[sample].read_bytes()
    # The name and Content-Type lie on purpose: only the bytes decide.
    response = await server.client.post("/upload", data=file_form(data, "lies.txt"))
    assert response.status == 201, await response.text()
    record = await response.json()
    assert (record["type"], record["mime"]) == EXPECTED_TYPES[sample]


async def test_chunked_request_body_is_accepted(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="a.mp3"))

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(body), 1000):
            yield body[offset:offset + 1000]

    response = await server.client.post("/upload", data=chunks(), headers={"Content-Type": FORM_CONTENT_TYPE})
    assert response.status == 201, await response.text()
    assert (await response.json())["sha256"] == hashlib.sha256(mp3).hexdigest()


async def test_client_path_in_file_name_is_reduced_to_the_name(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="../../etc/passwd"))
    response = await server.client.post("/upload", data=body, headers={"Content-Type": FORM_CONTENT_TYPE})
    record = await response.json()
    assert record["filename"] == "passwd"
    assert server.stored() == sorted([f"{record['id']}.json", f"{record['id']}.mp3"])


async def test_epilogue_after_closing_boundary_does_not_corrupt_the_file(start, mp3: bytes) -> None:
    """streaming-form-data writes a same-chunk epilogue into the file; we stop at the boundary."""
    server = await start()
    body = form(part("file", mp3, filename="a.mp3")) + b"\r\nthis is an epilogue, legal and ignored\r\n"
    response = await server.client.post("/upload", data=body, headers={"Content-Type": FORM_CONTENT_TYPE})
    assert response.status == 201, await response.text()
    assert (await response.json())["sha256"] == hashlib.sha256(mp3).hexdigest()


async def test_upload_multiple_stores_every_file(start, media_samples) -> None:
    server = await start()
    samples = ["mp3_id3", "flac", "webm"]
    body = aiohttp.FormData()
    body.add_field("note", "session 4")
    for name in samples:
        body.add_field("files", io.BytesIO(media_samples[name].read_bytes()), filename=f"{name}.bin")
    response = await server.client.post("/upload-multiple", data=body)
    assert response.status == 201, await response.text()
    records = (await response.json())["files"]
    assert [r["type"] for r in records] == ["mp3", "flac", "webm"]
    assert all(r["fields"] == {"note": "session 4"} for r in records)
    for record, name in zip(records, samples):
        assert record["sha256"] == hashlib.sha256(media_samples[name].read_bytes()).hexdigest()
    assert len(server.stored()) == 2 * len(samples)
    assert server.temp() == []


async def test_upload_multiple_is_all_or_nothing(start, media_samples) -> None:
    server = await start()
    body = aiohttp.FormData()
    body.add_field("files", io.BytesIO(media_samples["mp3_id3"].read_bytes()), filename="good.mp3")
    body.add_field("files", io.BytesIO(media_samples["flac"].read_bytes()), filename="good.flac")
    body.add_field("files", io.BytesIO(b"%PDF-1.7 not audio" * 100), filename="bad.mp3")
    response = await server.client.post("/upload-multiple", data=body)
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_file_type"
    server.assert_nothing_left()


async def test_upload_multiple_refuses_more_files_than_the_limit(start, mp3: bytes) -> None:
    server = await start(limits={"max_files_per_request": 2})
    body = form(*(part("files", mp3, filename=f"{i}.mp3") for i in range(3)))
    response = await server.client.post("/upload-multiple", data=body, headers={"Content-Type": FORM_CONTENT_TYPE})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "too_many_files"
    server.assert_nothing_left()


async def test_server_keeps_serving_after_a_refused_upload(start, mp3: bytes) -> None:
    server = await start()
    bad = await server.client.post("/upload", data=file_form(b"\x00" * 10000))
    assert bad.status == 415
    good = await server.client.post("/upload", data=file_form(mp3))
    assert good.status == 201
    health = await server.client.get("/health")
    assert (await health.json())["status"] == "ok"


async def test_every_impostor_is_refused_with_415_and_leaves_nothing(start, media_samples) -> None:
    from media_samples import EXPECTED

    server = await start()
    impostors = [name for name, expected in EXPECTED.items() if expected is None and name in media_samples]
    assert len(impostors) >= 10
    for name in impostors:
        data = media_samples[name].read_bytes()
        if not data:
            continue  # an empty part is missing_file, covered in test_multipart
        # A believable name and Content-Type: neither may sway the verdict.
        body = aiohttp.FormData()
        body.add_field("file", io.BytesIO(data), filename="song.mp3", content_type="audio/mpeg")
        response = await server.client.post("/upload", data=body)
        assert response.status == 415, name
        assert (await response.json())["error"]["code"] == "unsupported_file_type"
    server.assert_nothing_left()


async def test_a_known_type_outside_the_allow_list_is_refused(start, media_samples) -> None:
    server = await start()  # mkv is known, but not in the default allow-list
    response = await server.client.post("/upload", data=file_form(media_samples["mkv"].read_bytes(), "x.webm"))
    assert response.status == 415
    assert "mkv" in (await response.json())["error"]["message"]
    accepting = await start(types={"allowed": ["mkv"]})
    response = await accepting.client.post("/upload", data=file_form(media_samples["mkv"].read_bytes(), "x.webm"))
    assert response.status == 201
    assert (await response.json())["type"] == "mkv"


async def test_storage_failure_is_a_500_and_leaves_no_part(start, mp3: bytes) -> None:
    server = await start()
    files = Path(server.config.storage.dir)
    files.rmdir()
    files.write_text("the storage folder was replaced by a file")  # commit's rename must fail
    response = await server.client.post("/upload", data=file_form(mp3))
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "internal_error"
    assert server.temp() == []
    assert (await server.client.get("/health")).status == 200


@pytest.mark.parametrize("split_back", [1, 5, 12, 40])
async def test_closing_boundary_split_across_reads_is_found(start, mp3: bytes, split_back: int) -> None:
    """The closing boundary straddles two body chunks, with an epilogue after it."""
    server = await start()
    payload = mp3 + os.urandom(3 << 20)
    body = form(part("file", payload, filename="a.mp3")) + b"epilogue" * 10
    cut = body.rindex(b"--\r\n") - split_back

    async def two_reads() -> AsyncIterator[bytes]:
        yield body[:cut]
        await asyncio.sleep(0.05)  # the server reads what it has before the rest arrives
        yield body[cut:]

    response = await server.client.post("/upload", data=two_reads(), headers={
        "Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))})
    assert response.status == 201, await response.text()
    assert (await response.json())["sha256"] == hashlib.sha256(payload).hexdigest()


async def test_missing_temp_folder_is_a_500_not_a_404(start, mp3: bytes) -> None:
    server = await start()
    shutil.rmtree(server.config.storage.tmp_dir)
    response = await server.client.post("/upload", data=file_form(mp3 + os.urandom(3 << 20)))
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "internal_error"
    assert server.stored() == []
