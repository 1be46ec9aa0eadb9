"""The S3 backend beyond the shared contract (tests/test_storage_contract.py runs that),
against a real SeaweedFS: tails and parts, a writer's death, read-back, truncation, the
spool budget, listing, cleanup of leftovers, its config keys and credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from collections.abc import AsyncIterator
from typing import Any
from pathlib import Path

import pytest

from uploadsrv.config import ConfigError, config_from_mapping
from uploadsrv.errors import NotFound
from uploadsrv.storage import FileRecord, UploadInfo
from uploadsrv.storage.factory import StorageSetupError, open_storage, s3_credentials, storage_from_config
from uploadsrv.storage.s3 import S3Storage
from uploadsrv.storage.s3_layout import (MAX_PART, MIN_PART, UploadState, copy_ranges, decode_cursor, encode_cursor,
                                         part_sizes)
from uploadsrv.storage.s3_spool import Spool
from uploadsrv.uploads.hashstate import ResumableSha256

from seaweed import Cluster, Seaweed, s3_storage, seaweed, seaweed_cluster  # noqa: F401 - session fixtures

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def s3(seaweed: Seaweed, tmp_path: Path) -> AsyncIterator[S3Storage]:
    async with s3_storage(seaweed, tmp_path) as storage:
        yield storage


def info(upload_id: str = "up1", **changes: object) -> UploadInfo:
    return UploadInfo(id=upload_id, kind="tus", created_at="2026-11-30T00:00:00Z", **changes)  # type: ignore[arg-type]


def record_for(upload_id: str, data: bytes) -> FileRecord:
    return FileRecord(id=upload_id, filename="a.mp3", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      type="mp3", mime="audio/mpeg", created_at="2026-11-30T00:00:00Z")


async def append(storage: S3Storage, upload_id: str, data: bytes) -> int:
    writer = await storage.open_writer(upload_id)
    try:
        await writer.write([data])
        return await writer.flush()
    finally:
        await writer.close()


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def objects(storage: S3Storage, upload_id: str) -> dict[str, int]:
    """{key after uploads/: size} of one upload's objects."""
    found = {}
    async for page in storage.bucket.pages(storage.layout.upload_objects(upload_id)):
        found.update({item.key[len(storage.layout.uploads):]: item.size for item in page})
    return found


async def listed_parts(storage: S3Storage, upload_id: str) -> list[int]:
    uploads = [m for key, m, _ in await storage.bucket.multiparts(storage.layout.content(upload_id))
               if key == storage.layout.content(upload_id)]
    if not uploads:
        return []
    parts = await storage.bucket.list_parts(storage.layout.content(upload_id), uploads[0])
    return [parts[number].size for number in sorted(parts)]


async def test_a_tail_under_the_minimum_part_is_an_object_until_the_next_write_joins_it(s3: S3Storage) -> None:
    data = os.urandom(7 * MiB)
    await s3.create_upload(info())
    assert await append(s3, "up1", data[: 3 * MiB]) == 3 * MiB
    # Too small for a part: a tail object, and no multipart upload yet.
    assert {name: size for name, size in (await objects(s3, "up1")).items() if ".tail." in name} == {
        "up1.tail.1": 3 * MiB}
    assert await listed_parts(s3, "up1") == []
    assert await append(s3, "up1", data[3 * MiB :]) == 7 * MiB
    # The old tail and 2 MiB of new bytes made the first part; the rest is the new tail.
    assert await listed_parts(s3, "up1") == [5 * MiB]
    assert {name: size for name, size in (await objects(s3, "up1")).items() if ".tail." in name} == {
        "up1.tail.2": 2 * MiB}
    assert await s3.upload_offset("up1") == 7 * MiB
    await s3.commit("up1", record_for("up1", data))
    assert await read_all(s3.read_file(record_for("up1", data))) == data
    assert await objects(s3, "up1") == {} and await listed_parts(s3, "up1") == []


async def test_a_request_that_says_how_much_it_brings_is_cut_into_parts_that_fit_it(
        seaweed: Seaweed, tmp_path: Path) -> None:
    data = os.urandom(33 * MiB)

    async def send(storage: S3Storage, start: int, end: int, said: int) -> int:
        writer = await storage.open_writer("up1")
        try:
            writer.expect_until(start + said)
            await writer.write([data[start:end]])
            return await writer.flush()
        finally:
            await writer.close()

    async with s3_storage(seaweed, tmp_path, part_size=8 * MiB, spool_budget=32 * MiB) as s3:
        await s3.create_upload(info())
        # 16 MiB: three parts, not two of 8 MiB, so S3 has the first after 5.3 MiB.
        assert await send(s3, 0, 16 * MiB, 16 * MiB) == 16 * MiB
        thirds = [16 * MiB // 3 + 1, 16 * MiB // 3, 16 * MiB // 3]
        assert await listed_parts(s3, "up1") == thirds
        # 10 MiB: two parts of 5 MiB, where 8 MiB would have left a 2 MiB tail object.
        assert await send(s3, 16 * MiB, 26 * MiB, 10 * MiB) == 26 * MiB
        assert await listed_parts(s3, "up1") == [*thirds, 5 * MiB, 5 * MiB]
        assert not [name for name in await objects(s3, "up1") if ".tail." in name]
        # Cut off after 7 of the 16 MiB it said: what came is kept, past its part as a tail.
        assert await send(s3, 26 * MiB, 33 * MiB, 16 * MiB) == 33 * MiB
        assert await listed_parts(s3, "up1") == [*thirds, 5 * MiB, 5 * MiB, thirds[0]]
        assert [size for name, size in (await objects(s3, "up1")).items() if ".tail." in name] == [
            7 * MiB - thirds[0]]
        assert await s3.upload_offset("up1") == 33 * MiB
        await s3.commit("up1", record_for("up1", data))
        assert await read_all(s3.read_file(record_for("up1", data))) == data


async def test_commit_refuses_an_upload_whose_recorded_part_s3_does_not_hold_as_recorded(s3: S3Storage) -> None:
    data = os.urandom(6 * MiB)
    await s3.create_upload(info())
    assert await append(s3, "up1", data) == 6 * MiB  # one 5 MiB part and a tail
    state = UploadState.from_json(await s3.bucket.get_json(s3.layout.state("up1"), "no state"))
    # A state that names the part with another ETag than S3's (a writer that went wrong).
    forged = replace(state, parts=(replace(state.parts[0], etag="0" * 32),))
    await s3.bucket.put_json(s3.layout.state("up1"), forged.to_json())
    with pytest.raises(RuntimeError, match=r"no longer holds part\(s\) \[1\] as recorded"):
        await s3.commit("up1", record_for("up1", data))
    with pytest.raises(NotFound):
        await s3.get("up1")
    with pytest.raises(RuntimeError, match="as recorded"):
        await s3.upload_offset("up1")  # nor is that part counted in the offset a HEAD answers


async def test_a_tus_patch_is_stored_in_parts_cut_to_its_content_length(
        seaweed: Seaweed, start: Any, mp3: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    prefix = seaweed.new_prefix()
    running = await start(storage={"backend": "s3", "s3": {
        "endpoint": seaweed.endpoint, "bucket": seaweed.bucket, "prefix": prefix, "part_size": "8MiB",
        "spool_budget": "32MiB"}})
    data = mp3 + os.urandom(13 * MiB - len(mp3))
    tus = {"Tus-Resumable": "1.0.0"}
    created = await running.client.post("/files", headers={**tus, "Upload-Length": str(len(data))})
    assert created.status == 201
    path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
    answered = await running.client.patch(path, data=io.BytesIO(data[:10 * MiB]), headers={
        **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert answered.status == 204 and answered.headers["Upload-Offset"] == str(10 * MiB)
    async with s3_storage(seaweed, tmp_path / "look", prefix=prefix) as look:
        upload_id = path.rsplit("/", 1)[1]
        # Two 5 MiB parts and no tail: with 8 MiB parts only, 2 MiB would wait in a tail object.
        assert await listed_parts(look, upload_id) == [5 * MiB, 5 * MiB]
        assert not [name for name in await objects(look, upload_id) if ".tail." in name]
    answered = await running.client.patch(path, data=io.BytesIO(data[10 * MiB:]), headers={
        **tus, "Upload-Offset": str(10 * MiB), "Content-Type": "application/offset+octet-stream"})
    assert answered.status == 204
    info = await (await running.client.get(f"{path}/info")).json()
    assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["size"] == len(data)


DYING_WRITER = """
import asyncio, os, sys
from pathlib import Path
from uploadsrv.storage.s3 import S3Storage
from uploadsrv.storage.s3_bucket import Credentials

async def main() -> None:
    endpoint, bucket, prefix, spool, data = sys.argv[1:6]
    storage = S3Storage(bucket=bucket, endpoint=endpoint, region="us-east-1",
                        credentials=Credentials(os.environ["TEST_KEY"], os.environ["TEST_SECRET"]),
                        prefix=prefix, spool_dir=Path(spool), part_size=5 << 20, spool_budget=20 << 20)
    await storage.start()
    writer = await storage.open_writer("up1")
    await writer.write([Path(data).read_bytes()])
    print("written", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_an_instance_dying_mid_request_leaves_the_offset_of_the_recorded_parts_and_tail(
        seaweed: Seaweed, tmp_path: Path) -> None:
    data = os.urandom(20 * MiB)
    prefix = seaweed.new_prefix()
    async with s3_storage(seaweed, tmp_path / "a", prefix=prefix) as first:
        await first.create_upload(info())
        assert await append(first, "up1", data[: 7 * MiB]) == 7 * MiB  # part 1 and a 2 MiB tail
    # Another instance receives the next 11 MiB, sends two more parts, and is killed -9
    # before its request ends (no flush).
    (tmp_path / "next").write_bytes(data[7 * MiB : 18 * MiB])
    child = subprocess.Popen(
        [sys.executable, "-c", DYING_WRITER, seaweed.endpoint, seaweed.bucket, prefix, str(tmp_path / "spool"),
         str(tmp_path / "next")],
        stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "TEST_KEY": seaweed.access_key,
                                               "TEST_SECRET": seaweed.secret_key})
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line == b"written\n"
        async with s3_storage(seaweed, tmp_path / "b", prefix=prefix) as third:
            deadline = asyncio.get_running_loop().time() + 30
            while len(await listed_parts(third, "up1")) < 3:
                assert asyncio.get_running_loop().time() < deadline, "the dying writer's parts never landed"
                await asyncio.sleep(0.05)
            child.kill()
            child.wait(10)
            # S3 holds three parts, but only the first was recorded by a flush: the offset
            # is that part plus the recorded tail, as before the dead request.
            assert await third.upload_offset("up1") == 7 * MiB
            assert await read_all(third.read_upload("up1", 5 * MiB, 7 * MiB)) == data[5 * MiB : 7 * MiB]
            assert await append(third, "up1", data[7 * MiB :]) == 20 * MiB
            await third.commit("up1", record_for("up1", data))
            stored = await read_all(third.read_file(record_for("up1", data)))
            assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        assert child.stdout is not None
        child.stdout.close()


async def test_the_sha256_state_saved_with_the_info_carries_on_in_another_instance(
        seaweed: Seaweed, tmp_path: Path) -> None:
    data = os.urandom(13 * MiB)
    prefix = seaweed.new_prefix()
    async with s3_storage(seaweed, tmp_path / "a", prefix=prefix) as first:
        await first.create_upload(info())
        offset = await append(first, "up1", data[: 8 * MiB])
        hasher = ResumableSha256()
        hasher.update(data[:offset])
        await first.save_info(info().with_hash(hasher.state(), offset, "mp3"))
    async with s3_storage(seaweed, tmp_path / "b", prefix=prefix) as second:
        saved = await second.get_upload("up1")
        assert saved.hash_offset == await second.upload_offset("up1") == 8 * MiB
        assert saved.hash_state is not None
        resumed = ResumableSha256(saved.hash_state)
        resumed.update(data[8 * MiB :])
        await append(second, "up1", data[8 * MiB :])
        assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
        await second.commit("up1", record_for("up1", data))
        assert await read_all(second.read_file(record_for("up1", data))) == data


async def test_reading_back_bytes_in_parts_assembles_the_upload_and_writing_goes_on(s3: S3Storage) -> None:
    data = os.urandom(19 * MiB)
    await s3.create_upload(info())
    assert await append(s3, "up1", data[: 12 * MiB]) == 12 * MiB
    assert await read_all(s3.read_upload("up1", 1, 11 * MiB)) == data[1 : 11 * MiB]
    # Completed at the content key to be read: no multipart upload is left in progress.
    assert await listed_parts(s3, "up1") == [] and await s3.upload_offset("up1") == 12 * MiB
    assert await append(s3, "up1", data[12 * MiB :]) == 19 * MiB
    assert await read_all(s3.read_upload("up1")) == data
    await s3.commit("up1", record_for("up1", data))
    assert await read_all(s3.read_file(record_for("up1", data))) == data


async def test_truncate_drops_parts_a_failed_request_sent_and_can_cut_into_recorded_parts(s3: S3Storage) -> None:
    data = os.urandom(18 * MiB)
    await s3.create_upload(info())
    await append(s3, "up1", data[: 7 * MiB])
    writer = await s3.open_writer("up1")  # a request whose checksum will not match
    await writer.write([os.urandom(11 * MiB)])
    await writer.close()
    await s3.truncate("up1", 7 * MiB)
    assert await s3.upload_offset("up1") == 7 * MiB
    assert await append(s3, "up1", data[7 * MiB :]) == 18 * MiB
    assert await read_all(s3.read_upload("up1", 6 * MiB, 9 * MiB)) == data[6 * MiB : 9 * MiB]
    await s3.truncate("up1", 6 * MiB + 5)  # inside a recorded part
    assert await s3.upload_offset("up1") == 6 * MiB + 5
    assert await append(s3, "up1", b"end") == 6 * MiB + 8
    await s3.commit("up1", record_for("up1", data[: 6 * MiB + 5] + b"end"))
    assert await read_all(s3.read_file(record_for("up1", data[: 6 * MiB + 5] + b"end"))) == data[: 6 * MiB + 5] + b"end"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # sent and deleted meanwhile
            total += path.stat().st_size if path.is_file() else 0
    return total


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_64_mib_write_keeps_the_spool_and_memory_within_the_budget(seaweed: Seaweed, tmp_path: Path) -> None:
    budget = 2 * MIN_PART
    peaks = {"spool": 0, "rss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.003):
            peaks["spool"] = max(peaks["spool"], _folder_bytes(tmp_path / "spool"))
            peaks["rss"] = max(peaks["rss"], _rss())

    async with s3_storage(seaweed, tmp_path, spool_budget=budget) as s3:
        await s3.create_upload(info())
        writer = await s3.open_writer("up1")
        digest = hashlib.sha256()
        baseline = _rss()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for _ in range(32):  # 64 MiB in 2 MiB batches, made as they go (never all in memory)
                batch = [os.urandom(MiB), os.urandom(MiB)]
                digest.update(batch[0] + batch[1])
                await writer.write(batch)
            assert await writer.flush() == 64 * MiB
        finally:
            done.set()
            sampler.join()
            await writer.close()
        assert 0 < peaks["spool"] <= budget
        # Parts go from the spool file to the socket in chunks: memory grows by less than
        # the spool budget, though the write is six times larger.
        assert peaks["rss"] - baseline < budget, (peaks["rss"] - baseline) / MiB
        record = FileRecord(id="up1", filename="a.mp3", size=64 * MiB, sha256=digest.hexdigest(), type="mp3",
                            mime="audio/mpeg", created_at="2026-11-30T00:00:00Z")
        await s3.commit("up1", record)
        stored = hashlib.sha256()
        async for chunk in s3.read_file(record):
            stored.update(chunk)
        assert stored.hexdigest() == digest.hexdigest()
        assert _folder_bytes(tmp_path / "spool") == 0


async def commit_file(storage: S3Storage, file_id: str, data: bytes) -> FileRecord:
    await storage.create_upload(info(file_id))
    await append(storage, file_id, data)
    record = record_for(file_id, data)
    await storage.commit(file_id, record)
    return record


async def test_files_are_listed_newest_first_in_pages_by_every_instance(seaweed: Seaweed, tmp_path: Path) -> None:
    prefix = seaweed.new_prefix()
    async with s3_storage(seaweed, tmp_path / "a", prefix=prefix) as first, \
            s3_storage(seaweed, tmp_path / "b", prefix=prefix) as second:
        for number, storage in enumerate([first, second, first, second, first]):
            await commit_file(storage, f"f{number}", b"%d" % number)
        for storage in (first, second):
            seen: list[str] = []
            page, cursor = await storage.list_files(2, None)
            seen += [record.id for record in page]
            while cursor:
                page, cursor = await storage.list_files(2, cursor)
                seen += [record.id for record in page]
            assert seen == ["f4", "f3", "f2", "f1", "f0"]
        await second.delete("f2")
        page, cursor = await first.list_files(10, None)
        assert [record.id for record in page] == ["f4", "f3", "f1", "f0"] and cursor is None
        assert await first.list_uploads() == []


async def test_cleanup_sees_a_multipart_upload_nothing_records_and_terminate_aborts_it(s3: S3Storage) -> None:
    await s3.create_upload(info())
    await append(s3, "up1", os.urandom(6 * MiB))  # one part: a multipart upload in S3
    # A crash after the multipart upload began but before anything named it.
    await s3.bucket.delete(s3.layout.state("up1"), s3.layout.info("up1"))
    [entry] = await s3.list_uploads()
    assert (entry.id, entry.has_info, entry.has_data) == ("up1", False, True)
    await s3.terminate("up1")
    assert await s3.list_uploads() == []
    assert await s3.bucket.multiparts(s3.layout.content_folder) == []


async def test_terminate_removes_parts_and_an_assembled_content_but_never_a_committed_file(s3: S3Storage) -> None:
    data = os.urandom(6 * MiB)
    await s3.create_upload(info("gone"))
    await append(s3, "gone", data)
    await read_all(s3.read_upload("gone", 0, MiB))  # assembled at files/gone
    await s3.terminate("gone")
    assert not await s3.bucket.exists(s3.layout.content("gone"))
    record = await commit_file(s3, "kept", data)
    # Upload objects left by a commit cut off before its clean-up, then terminated.
    await s3.bucket.put_json(s3.layout.state("kept"), {"v": 1})
    await s3.terminate("kept")
    assert await read_all(s3.read_file(record)) == data
    assert await s3.list_uploads() == []


async def test_a_deleted_file_is_gone_with_its_content(s3: S3Storage) -> None:
    record = await commit_file(s3, "f1", b"data")
    await s3.delete("f1")
    with pytest.raises(NotFound):
        await s3.get("f1")
    with pytest.raises(NotFound):
        await read_all(s3.read_file(record))
    assert await s3.list_files(10, None) == ([], None)


async def test_the_backend_comes_up_from_config_with_credentials_from_the_environment(
        seaweed: Seaweed, tmp_path: Path) -> None:
    config = config_from_mapping({"storage": {"backend": "s3", "s3": {
        "endpoint": seaweed.endpoint, "bucket": seaweed.bucket, "prefix": seaweed.new_prefix(),
        "part_size": "5MiB", "spool_budget": "20MiB"}}}, tmp_path)
    assert config.storage.s3.spool_dir == tmp_path / "data" / "tmp" / "spool"
    environ = {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key}
    async with open_storage(config, environ) as storage:
        assert isinstance(storage, S3Storage)
        await commit_file(storage, "f1", b"abc")
        assert (await storage.get("f1")).size == 3
        assert await storage.free_space() > 1 << 50
    with pytest.raises(StorageSetupError, match="InvalidAccessKeyId|403|Forbidden") as refused:
        async with open_storage(config, {**environ, "AWS_ACCESS_KEY_ID": "nobody"}):
            pass
    assert seaweed.secret_key not in str(refused.value)  # a start-up line names no secret


def test_credentials_come_from_a_file_or_the_environment_and_never_show(tmp_path: Path) -> None:
    secret = "very-secret-value"
    file = tmp_path / "credentials"
    file.write_text(f"[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = {secret}\n")
    config = config_from_mapping({"storage": {"backend": "s3", "s3": {
        "bucket": "b", "credentials_file": "credentials"}}}, tmp_path)
    from_file = s3_credentials(config.storage.s3, {})
    assert from_file.access_key_id == "AKIDFILE" and secret not in repr(from_file)
    environment = config_from_mapping({"storage": {"backend": "s3", "s3": {"bucket": "b"}}}, tmp_path)
    from_env = s3_credentials(environment.storage.s3, {"AWS_ACCESS_KEY_ID": "AKIDENV",
                                                       "AWS_SECRET_ACCESS_KEY": secret})
    assert from_env.access_key_id == "AKIDENV" and secret not in repr(from_env)
    with pytest.raises(StorageSetupError, match="AWS_ACCESS_KEY_ID"):
        s3_credentials(environment.storage.s3, {})
    file.write_text(f"[default]\naws_secret_access_key = {secret}\n")
    with pytest.raises(StorageSetupError) as refused:
        s3_credentials(config.storage.s3, {})
    assert secret not in str(refused.value)
    assert secret not in repr(storage_from_config(environment, {"AWS_ACCESS_KEY_ID": "k",
                                                               "AWS_SECRET_ACCESS_KEY": secret}).__dict__)


@pytest.mark.parametrize("s3, problem", [
    ({}, "storage.s3.bucket"),
    ({"bucket": "b", "part_size": "4MiB"}, "part_size"),
    ({"bucket": "b", "part_size": "8MiB", "spool_budget": "4MiB"}, "spool_budget"),
    ({"bucket": "b", "endpoint": "s3.example.com"}, "endpoint"),
    ({"bucket": "b", "colour": "blue"}, "colour"),
])
def test_bad_s3_settings_name_their_key(tmp_path: Path, s3: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        config_from_mapping({"storage": {"backend": "s3", "s3": s3}}, tmp_path)


def test_the_filesystem_backend_stays_the_default(tmp_path: Path) -> None:
    config = config_from_mapping({}, tmp_path)
    assert config.storage.backend == "filesystem" and config.storage.s3.part_size == 8 * MiB
    assert type(storage_from_config(config)).__name__ == "FilesystemStorage"


def test_a_request_is_cut_into_parts_no_smaller_than_s3_takes_nor_larger_than_preferred() -> None:
    preferred = 8 * MiB
    for total in range(0, 70 * MiB, MiB // 3):
        sizes = part_sizes(total, preferred)
        if not sizes:
            # Under the minimum, or between one preferred part and two minimum ones.
            assert total < MIN_PART or preferred < total < 2 * MIN_PART
            continue
        assert sum(sizes) == total and all(MIN_PART <= size <= preferred for size in sizes)
        needed = -(-total // preferred)
        assert len(sizes) in (needed, needed + 1)
    # One part more than 8 MiB ones need, where they stay 5 MiB or more; none under 5 MiB.
    assert len(part_sizes(16 * MiB, preferred)) == 3 and len(part_sizes(1 << 30, preferred)) == 129
    assert part_sizes(10 * MiB, preferred) == [5 * MiB, 5 * MiB] and part_sizes(6 * MiB, preferred) == [6 * MiB]
    assert part_sizes(9 * MiB, preferred) == [] and part_sizes(4 * MiB, preferred) == []


def test_copied_ranges_are_valid_parts_and_cursors_are_checked() -> None:
    for size in (MIN_PART, 12 * MiB, MAX_PART, MAX_PART + 1, 3 * MAX_PART - 7):
        ranges = copy_ranges(size)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(MIN_PART <= end - start <= MAX_PART for start, end in ranges)
        assert all(left[1] == right[0] for left, right in zip(ranges, ranges[1:], strict=False))
    name = "08200000000000000000-abc"
    assert decode_cursor(encode_cursor(name)) == name
    for bad in ("not-a-cursor", encode_cursor("../x"), "%%%"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


async def test_two_instances_on_two_gateways_of_one_cluster_write_one_upload_in_turns(
        seaweed_cluster: Cluster, tmp_path: Path) -> None:
    data = os.urandom(17 * MiB + 3)
    prefix = seaweed_cluster.new_prefix()
    first_gateway, second_gateway = seaweed_cluster.endpoints
    async with s3_storage(seaweed_cluster, tmp_path / "a", prefix=prefix, endpoint=first_gateway) as first, \
            s3_storage(seaweed_cluster, tmp_path / "b", prefix=prefix, endpoint=second_gateway) as second:
        await first.create_upload(info())
        hasher = ResumableSha256()
        at = 0
        for storage, size in [(first, 3 * MiB), (second, 6 * MiB), (first, 2 * MiB), (second, 6 * MiB + 3)]:
            saved = await storage.get_upload("up1")
            assert saved.hash_offset == await storage.upload_offset("up1") == at
            hasher = ResumableSha256(saved.hash_state) if saved.hash_state else ResumableSha256()
            chunk = data[at : at + size]
            at = await append(storage, "up1", chunk)
            hasher.update(chunk)
            await storage.save_info(saved.with_hash(hasher.state(), at, None))
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
        await first.commit("up1", record_for("up1", data))
        assert await read_all(second.read_file(record_for("up1", data))) == data
        assert [record.id for record in (await second.list_files(10, None))[0]] == ["up1"]


async def test_an_assembly_cut_off_before_its_state_was_written_is_recovered(s3: S3Storage) -> None:
    data = os.urandom(13 * MiB)
    await s3.create_upload(info())
    await append(s3, "up1", data[: 12 * MiB])
    state = await s3._state("up1")
    assert state.multipart is not None and len(state.parts) == 2
    # What `assemble` does before it records its new state: the tail as the last part, completed.
    key = s3.layout.content("up1")
    tail = await s3.bucket.copy_part(key, state.multipart, 3, s3.layout.tail("up1", state.tail_seq), 0,
                                     state.tail_size)
    await s3.bucket.complete(key, state.multipart, [*state.parts, tail])
    assert await s3.upload_offset("up1") == 12 * MiB
    assert await append(s3, "up1", data[12 * MiB :]) == 13 * MiB
    await s3.commit("up1", record_for("up1", data))
    assert await read_all(s3.read_file(record_for("up1", data))) == data


def test_the_spool_removes_the_folders_of_dead_processes_of_its_host_only(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for name in (f"pid-{host}.{dead.pid}.aa", f"pid-{host}.{os.getpid()}.bb", f"pid-elsewhere.{dead.pid}.cc"):
        (tmp_path / name).mkdir()
    spool = Spool(tmp_path, part_size=MIN_PART, budget=2 * MIN_PART)
    spool.prepare()
    try:
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
            [f"pid-{host}.{os.getpid()}.bb", f"pid-elsewhere.{dead.pid}.cc", spool.folder.name])
    finally:
        spool.close()
    assert not spool.folder.exists()
