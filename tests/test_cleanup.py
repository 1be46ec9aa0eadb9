"""The cleanup task: stale parts go, fresh and active ones stay; driven without sleeping."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from support import BOUNDARY, FORM_CONTENT_TYPE, apoll, request_head

from uploadsrv.appkeys import CLEANUP_TASK
from uploadsrv.cleanup import run_cleanup_pass


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


async def test_cleanup_removes_stale_parts_and_keeps_fresh_ones(start, caplog) -> None:
    server = await start(cleanup={"partial_expiry": "10m"})
    tmp = Path(server.config.storage.tmp_dir)
    stale, fresh = tmp / "stale123.part", tmp / "fresh123.part"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    age(stale, 11 * 60)
    age(fresh, 9 * 60)
    with caplog.at_level(logging.INFO, logger="uploadsrv.cleanup"):
        removed = await run_cleanup_pass(server.client.app)
    assert removed == [("stale123", 1000)]
    assert server.temp() == ["fresh123.part"]
    assert "stale123" in caplog.text and "1000 bytes" in caplog.text


async def test_cleanup_never_removes_an_active_uploads_part(start, mp3: bytes) -> None:
    server = await start(cleanup={"partial_expiry": "10m"})
    first = (b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="x.mp3"\r\n\r\n'
             + mp3)
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(1 << 30)})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + first + os.urandom(3 << 20))  # past the first batch, so the part exists
    await writer.drain()
    await apoll(lambda: any(name.endswith(".part") for name in server.temp()))
    tmp = Path(server.config.storage.tmp_dir)
    [part] = tmp.glob("*.part")
    for path in tmp.glob(f"{part.stem}.*"):
        age(path, 3600)  # idle far past expiry, but a request is writing it (and holds its lock)
    assert await run_cleanup_pass(server.client.app) == []
    assert part.exists()
    writer.close()
    await apoll(lambda: server.temp() == [])


async def test_cleanup_task_runs_with_the_app_and_stops_with_it(start) -> None:
    server = await start(cleanup={"interval": "1h"})
    task = server.client.app[CLEANUP_TASK]
    assert not task.done()
    await server.client.close()
    assert task.cancelled()


TUS = {"Tus-Resumable": "1.0.0"}


async def test_an_expired_tus_upload_is_removed_whole_and_then_answers_404(start, mp3: bytes) -> None:
    server = await start(cleanup={"partial_expiry": "10m"})
    created = await server.client.post("/files", headers={**TUS, "Upload-Length": str(len(mp3) * 2)})
    path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
    patched = await server.client.patch(path, data=mp3, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status == 204
    tmp = Path(server.config.storage.tmp_dir)
    upload_id = path.rsplit("/", 1)[1]
    for leftover in tmp.glob(f"{upload_id}.*"):
        age(leftover, 11 * 60)
    removed = await run_cleanup_pass(server.client.app)
    assert [name for name, _ in removed] == [upload_id]
    assert server.temp() == []  # data and info together, and no lock left
    assert (await server.client.head(path, headers=TUS)).status == 404


async def test_orphans_are_removed_once_idle_past_expiry(start) -> None:
    server = await start(cleanup={"partial_expiry": "10m"})
    tmp = Path(server.config.storage.tmp_dir)
    data_only, info_only, fresh = tmp / "dataonly.part", tmp / "infoonly.info", tmp / "freshinfo.info"
    data_only.write_bytes(b"x" * 10)
    info_only.write_text("{}")
    fresh.write_text("{}")
    for path in (data_only, info_only):
        age(path, 3600)
    removed = await run_cleanup_pass(server.client.app)
    assert sorted(name for name, _ in removed) == ["dataonly", "infoonly"]
    assert server.temp() == ["freshinfo.info"]


async def test_an_expired_upload_with_a_request_in_progress_is_kept(start, mp3: bytes) -> None:
    server = await start(cleanup={"partial_expiry": "10m"})
    length = len(mp3) + (4 << 20)
    created = await server.client.post("/files", headers={**TUS, "Upload-Length": str(length)})
    path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
    upload_id = path.rsplit("/", 1)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_head("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Length": str(length),
                                              "Content-Type": "application/offset+octet-stream"}) + mp3)
    await writer.drain()
    tmp = Path(server.config.storage.tmp_dir)
    await apoll(lambda: (tmp / "locks" / f"{upload_id}.lock").exists())
    for leftover in tmp.glob(f"{upload_id}.*"):
        age(leftover, 3600)
    assert await run_cleanup_pass(server.client.app) == []
    assert (tmp / f"{upload_id}.info").exists()
    writer.close()
