"""The storage contract (`uploadsrv.storage.base`), run unchanged against every backend.

Each test states one promise of the contract from the caller's side; a new backend
joins the `storage` fixture's list and must pass all of them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from uploadsrv.errors import NotFound
from uploadsrv.storage import FileRecord, FilesystemStorage, MemoryStorage, Storage, UploadInfo

from seaweed import s3_storage, seaweed  # noqa: F401 - the fixture, for the "s3" param


@pytest.fixture(params=["memory", "filesystem", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
        return
    if request.param == "s3":
        async with s3_storage(request.getfixturevalue("seaweed"), tmp_path) as s3:
            yield s3
        return
    backend = FilesystemStorage(tmp_path / "files", tmp_path / "tmp")
    backend.prepare()
    yield backend
    backend.close()


def info(upload_id: str = "up1", **changes: object) -> UploadInfo:
    return UploadInfo(id=upload_id, kind="tus", created_at="2026-11-30T00:00:00Z", **changes)  # type: ignore[arg-type]


def record_for(upload_id: str, data: bytes) -> FileRecord:
    return FileRecord(id=upload_id, filename="a.mp3", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      type="mp3", mime="audio/mpeg", created_at="2026-11-30T00:00:00Z", fields={"k": "v"})


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def append(storage: Storage, upload_id: str, *pieces: bytes) -> int:
    writer = await storage.open_writer(upload_id)
    try:
        await writer.write(list(pieces))
        return await writer.flush()
    finally:
        await writer.close()


async def test_a_new_upload_has_its_info_and_no_bytes(storage: Storage) -> None:
    created = info(length=10, metadata={"filename": "a.mp3"}, hash_state=b"\x01" * 112, hash_offset=0)
    await storage.create_upload(created)
    assert await storage.get_upload("up1") == created
    assert await storage.upload_offset("up1") == 0


async def test_flush_returns_the_durable_offset_and_appends_continue_at_the_end(storage: Storage) -> None:
    await storage.create_upload(info())
    assert await append(storage, "up1", b"abc", b"", b"defg") == 7
    # A later writer (the next PATCH) continues where the bytes end.
    assert await append(storage, "up1", os.urandom(5000)) == 5007
    assert await storage.upload_offset("up1") == 5007


async def test_a_writer_opens_at_the_stored_offset(storage: Storage) -> None:
    # A PATCH takes its offset from the writer it opens: it must be upload_offset's answer,
    # also once S3 holds parts (6 MiB: a part and a tail) and after a truncate.
    await storage.create_upload(info())
    for expected in (0, 6 << 20):
        writer = await storage.open_writer("up1")
        try:
            assert writer.offset == expected == await storage.upload_offset("up1")
        finally:
            await writer.close()
        if not expected:
            await append(storage, "up1", os.urandom(6 << 20))
    await storage.truncate("up1", 1000)
    writer = await storage.open_writer("up1")
    try:
        assert writer.offset == 1000 == await storage.upload_offset("up1")
    finally:
        await writer.close()


async def test_saved_info_replaces_the_old_one(storage: Storage) -> None:
    await storage.create_upload(info())
    await storage.save_info(info(length=99, media="mp3", hash_state=b"s" * 112, hash_offset=64))
    got = await storage.get_upload("up1")
    assert (got.length, got.media, got.hash_state, got.hash_offset) == (99, "mp3", b"s" * 112, 64)


async def test_truncate_drops_the_bytes_past_an_offset(storage: Storage) -> None:
    await storage.create_upload(info())
    await append(storage, "up1", b"0123456789")
    await storage.truncate("up1", 4)
    assert await storage.upload_offset("up1") == 4
    assert await append(storage, "up1", b"XY") == 6
    assert await read_all(storage.read_upload("up1")) == b"0123XY"


async def test_read_upload_returns_a_range_of_the_stored_bytes(storage: Storage) -> None:
    data = os.urandom(3 << 20)
    await storage.create_upload(info())
    await append(storage, "up1", data)
    assert await read_all(storage.read_upload("up1")) == data
    assert await read_all(storage.read_upload("up1", 5, (2 << 20) + 9)) == data[5 : (2 << 20) + 9]


async def test_commit_makes_a_file_and_the_upload_is_gone(storage: Storage) -> None:
    data = os.urandom(10_000)
    await storage.create_upload(info())
    await append(storage, "up1", data)
    record = record_for("up1", data)
    await storage.commit("up1", record)
    assert await storage.get("up1") == record
    assert await read_all(storage.read_file(record)) == data
    assert await read_all(storage.read_file(record, 100, 200)) == data[100:200]
    with pytest.raises(NotFound):
        await storage.get_upload("up1")
    assert [entry.id for entry in await storage.list_uploads()] == []


async def test_terminate_removes_bytes_and_info_and_is_idempotent(storage: Storage) -> None:
    await storage.create_upload(info())
    await append(storage, "up1", b"abc")
    await storage.terminate("up1")
    await storage.terminate("up1")
    for call in (storage.get_upload("up1"), storage.upload_offset("up1")):
        with pytest.raises(NotFound):
            await call
    assert await storage.list_uploads() == []


async def test_list_uploads_reports_size_and_idleness(storage: Storage) -> None:
    await storage.create_upload(info("a1"))
    await append(storage, "a1", b"x" * 100)
    [entry] = await storage.list_uploads()
    assert entry.id == "a1" and entry.has_data and entry.has_info
    assert entry.size >= 100 and 0 <= entry.idle_seconds < 60
    assert 0 <= await storage.upload_idle_seconds("a1") < 60


async def test_unknown_ids_are_not_found(storage: Storage) -> None:
    for call in (storage.get_upload("nope"), storage.upload_offset("nope"), storage.get("nope"),
                 storage.delete("nope"), storage.open_writer("nope")):
        with pytest.raises(NotFound):
            await call


async def test_files_are_listed_newest_first_in_pages_and_deleted(storage: Storage) -> None:
    for number in range(5):
        upload_id = f"f{number}"
        await storage.create_upload(info(upload_id))
        await append(storage, upload_id, b"%d" % number)
        await storage.commit(upload_id, record_for(upload_id, b"%d" % number))
    page, cursor = await storage.list_files(2, None)
    seen = [record.id for record in page]
    while cursor:
        page, cursor = await storage.list_files(2, cursor)
        seen += [record.id for record in page]
    assert sorted(seen) == [f"f{n}" for n in range(5)] and len(seen) == 5
    await storage.delete("f3")
    with pytest.raises(NotFound):
        await storage.get("f3")
    with pytest.raises(ValueError):
        await storage.list_files(2, "not-a-cursor")


async def test_free_space_is_a_byte_count(storage: Storage) -> None:
    assert await storage.free_space() > 0
