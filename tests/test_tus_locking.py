"""One writer per upload: 423 for a second live writer, the stale-request takeover, HEAD that
never waits on a live writer, and no lock left behind by a request that has ended.

Raw sockets play the clients, because what matters is a request that is still open: one
streaming its body (live), or one gone silent after a network change (stale).
"""

from __future__ import annotations

import asyncio
import io
import json
import hashlib
import os
import time

from support import apoll, read_until_close, request_head, status_of

TUS = {"Tus-Resumable": "1.0.0"}


async def create_upload(server, length: int) -> str:
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": str(length)})
    assert response.status == 201, await response.text()
    return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


async def open_patch(server, path: str, offset: int, length: int, first: bytes):
    """A PATCH whose body (of `length` bytes) has only begun: the client keeps the socket open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_head("PATCH", path, {
        **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(length), "Connection": "close"}) + first)
    await writer.drain()
    return reader, writer


async def head(server, path: str):
    return await server.client.head(path, headers=TUS)


def locks(server) -> list[str]:
    return [name for name in server.temp() if name.startswith("locks/")]


async def test_a_second_writer_gets_423_while_the_first_streams_and_the_first_completes(start, mp3: bytes) -> None:
    server = await start()
    data = mp3 + os.urandom(1 << 20)
    path = await create_upload(server, len(data))
    reader, writer = await open_patch(server, path, 0, len(data), data[:200_000])
    await apoll(lambda: locks(server) != [])  # the first PATCH holds the upload

    second = await server.client.patch(path, data=b"x", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert second.status == 423
    assert (await second.json())["error"]["code"] == "upload_locked"
    started = time.monotonic()
    assert (await head(server, path)).status == 423  # HEAD never waits on a live writer
    assert time.monotonic() - started < 1.0

    writer.write(data[200_000:])
    raw = await read_until_close(reader, 5)
    writer.close()
    assert status_of(raw) == 204 and f"Upload-Offset: {len(data)}".encode() in raw
    info = await (await server.client.get(path + "/info")).json()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    await apoll(lambda: locks(server) == [])


async def test_a_silent_request_is_taken_over_and_keeps_what_it_received(start, mp3: bytes) -> None:
    server = await start(limits={"stale_after": "1s", "idle_timeout": "60s"})
    data = mp3 + os.urandom(2 << 20)
    path = await create_upload(server, len(data))
    sent = 300_000
    reader, writer = await open_patch(server, path, 0, len(data), data[:sent])
    await apoll(lambda: locks(server) != [])
    # The client switched networks: the old request stays open and silent. The newcomer
    # retries on 423 as tus clients do, and gets in well before the 60 s idle timeout.
    started = time.monotonic()
    while (response := await head(server, path)).status == 423:
        assert time.monotonic() - started < 8, "the silent request was never taken over"
        await asyncio.sleep(0.2)
    waited = time.monotonic() - started
    assert response.status == 200, await response.text()
    assert int(response.headers["Upload-Offset"]) == sent  # every byte that arrived was kept
    assert waited < 8

    rest = await server.client.patch(path, data=io.BytesIO(data[sent:]), headers={
        **TUS, "Upload-Offset": str(sent), "Content-Type": "application/offset+octet-stream"})
    assert rest.status == 204, await rest.text()
    info = await (await server.client.get(path + "/info")).json()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    writer.close()
    await apoll(lambda: locks(server) == [])


async def test_a_request_cut_off_mid_body_releases_the_upload_at_once(start, mp3: bytes) -> None:
    server = await start()
    data = mp3 + os.urandom(1 << 20)
    path = await create_upload(server, len(data))
    reader, writer = await open_patch(server, path, 0, len(data), data[:100_000])
    await apoll(lambda: locks(server) != [])
    writer.close()  # the connection drops
    await apoll(lambda: locks(server) == [])
    response = await head(server, path)
    assert response.status == 200
    assert int(response.headers["Upload-Offset"]) == 100_000


async def test_no_lock_outlives_its_request_whatever_the_outcome(start, mp3: bytes) -> None:
    server = await start(limits={"max_file_size": "2MiB"})
    path = await create_upload(server, 1000)
    patch_headers = {**TUS, "Content-Type": "application/offset+octet-stream"}
    outcomes = [
        await server.client.patch(path, data=b"x" * 10, headers={**patch_headers, "Upload-Offset": "5"}),  # 409
        await server.client.patch(path, data=b"x" * 2000, headers={**patch_headers, "Upload-Offset": "0"}),  # 413
        await server.client.patch(path, data=os.urandom(100), headers={**patch_headers, "Upload-Offset": "0"}),
        await head(server, path),
    ]
    assert [response.status for response in outcomes][:2] == [409, 413]
    assert outcomes[2].status == 415  # random bytes: refused, the upload deleted
    assert outcomes[3].status == 404
    assert locks(server) == []
    assert server.temp() == []


def test_the_lock_holds_across_two_server_processes_on_one_storage(tmp_path, mp3: bytes) -> None:
    """Two real processes share one storage folder (as workers or instances will): a PATCH
    streaming into one makes the other answer 423, and once it goes silent the other
    takes the upload over through the release request."""
    import http.client
    import socket

    from support import poll, start_process

    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n'
                      '[limits]\nstale_after = "1s"\n')
    first, second = start_process(config, tmp_path), start_process(config, tmp_path)
    try:
        data = mp3 + os.urandom(1 << 20)

        def call(server, method: str, path: str, headers: dict[str, str], body: bytes = b""):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
            connection.request(method, path, body=body, headers={**TUS, **headers})
            response = connection.getresponse()
            response.read()
            connection.close()
            return response

        created = call(first, "POST", "/files", {"Upload-Length": str(len(data))})
        path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
        sent = 200_000
        with socket.create_connection(("127.0.0.1", first.port)) as stream:
            stream.sendall(request_head("PATCH", path, {
                **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(len(data))}) + data[:sent])
            poll(lambda: any((tmp_path / "tmp" / "locks").glob("*.lock")))
            assert call(second, "PATCH", path, {"Upload-Offset": "0",
                                                "Content-Type": "application/offset+octet-stream"}, b"x").status == 423
            started = time.monotonic()
            while (answer := call(second, "HEAD", path, {})).status == 423:
                assert time.monotonic() - started < 8
            assert answer.status == 200 and int(answer.headers["Upload-Offset"]) == sent
        finished = call(second, "PATCH", path, {"Upload-Offset": str(sent),
                                                "Content-Type": "application/offset+octet-stream"}, data[sent:])
        assert finished.status == 204
        connection = http.client.HTTPConnection("127.0.0.1", first.port, timeout=20)
        connection.request("GET", path + "/info")
        record = json.loads(connection.getresponse().read())
        connection.close()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        for server in (first, second):
            server.process.terminate()
            server.process.wait(10)
