"""Refusals before and during the body: size, type, slots, disk, silence, auth, disconnects.

These talk raw HTTP over a socket to see what the server does on the wire: whether it
answers before the body is sent, and whether it stops reading a body it refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
from collections.abc import Callable

import pytest
from support import (
    BOUNDARY, FORM_CONTENT_TYPE, apoll, form, part, raw_exchange, read_until_close, request_head, status_of,
)

GIB = 1 << 30


def error_code(raw: bytes) -> str:
    body = raw.split(b"\r\n\r\n")[-1]
    return str(json.loads(body)["error"]["code"])


async def test_declared_size_over_limit_is_refused_before_the_body(start) -> None:
    server = await start(limits={"max_file_size": "1MiB"})
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(6 * GIB)})
    raw = await raw_exchange(server.port, head)  # no body byte is ever sent
    assert status_of(raw) == 413
    assert error_code(raw) == "file_too_large"
    server.assert_nothing_left()


async def test_expect_continue_gets_413_instead_of_100(start) -> None:
    server = await start(limits={"max_file_size": "1MiB"})
    head = request_head("POST", "/upload", {
        "Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(GIB), "Expect": "100-continue"})
    raw = await raw_exchange(server.port, head)
    assert b"100 Continue" not in raw
    assert status_of(raw) == 413


async def test_expect_continue_for_an_acceptable_upload_gets_100_then_201(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="a.mp3"))
    head = request_head("POST", "/upload", {
        "Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body)), "Expect": "100-continue",
        "Connection": "close"})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    raw = await read_until_close(reader, 10)
    writer.close()
    assert status_of(raw) == 201


async def test_expect_continue_without_token_gets_401_instead_of_100(start) -> None:
    server = await start(auth={"tokens": ["s3cret"]})
    head = request_head("POST", "/upload", {
        "Content-Type": FORM_CONTENT_TYPE, "Content-Length": "100000", "Expect": "100-continue"})
    raw = await raw_exchange(server.port, head)
    assert b"100 Continue" not in raw
    assert status_of(raw) == 401


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _stream_until_answered(port: int, head: bytes, first: bytes, total: int,
                           frame: Callable[[bytes], bytes]) -> tuple[bytes, int]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + frame(first))
        sent = len(first)
        framed = frame(os.urandom(64 << 10))
        sock.setblocking(False)
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break  # the answer has begun to arrive
            if writable:
                try:
                    sock.send(framed)  # a short send only shifts the framing; the server stops reading anyway
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break  # reset by the server: its answer is still in our receive buffer
                sent += len(framed)
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            sock.shutdown(socket.SHUT_WR)  # like curl, stop sending once the answer is in
        except OSError:
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received, sent


async def stream_until_answered(port: int, head: bytes, first: bytes, total: int,
                                frame: Callable[[bytes], bytes] = bytes) -> tuple[bytes, int]:
    """Send `head`, `first`, then random bytes up to `total` until an answer arrives.

    Returns the response and how many body bytes had been sent when it arrived. A plain
    socket in a thread, like curl: it still reads the answer after the server resets."""
    return await asyncio.to_thread(_stream_until_answered, port, head, first, total, frame)


async def test_wrong_type_is_refused_from_the_first_bytes_of_a_big_body(start) -> None:
    server = await start()
    total = 2 * GIB
    first = b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="x.mp3"\r\n\r\n'
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(total)})
    raw, sent = await stream_until_answered(server.port, head, first, total)
    assert status_of(raw) == 415
    assert error_code(raw) == "unsupported_file_type"
    assert sent < 64 << 20, f"the client had sent {sent} bytes before the refusal"
    await apoll(lambda: server.temp() == [])
    server.assert_nothing_left()


async def test_streamed_body_is_refused_when_it_crosses_the_limit(start, mp3: bytes) -> None:
    server = await start(limits={"max_file_size": "2MiB"})
    first = (b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="x.mp3"\r\n\r\n'
             + mp3)
    # Chunked: no Content-Length, so only the stream itself can cross the limit.
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Transfer-Encoding": "chunked"})
    raw, sent = await stream_until_answered(server.port, head, first, 256 << 20, frame=chunked)
    assert status_of(raw) == 413
    assert error_code(raw) == "file_too_large"
    assert sent < 64 << 20, f"the client had sent {sent} bytes before the refusal"
    await apoll(lambda: server.temp() == [])
    server.assert_nothing_left()


@pytest.mark.parametrize("sections, status", [
    ({"auth": {"tokens": ["s3cret"]}}, 401),
    ({"storage": {"min_free_space": "1000TiB"}}, 507),
])
async def test_refusal_before_the_body_stops_a_streaming_client(start, sections, status: int) -> None:
    server = await start(**sections)
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(2 * GIB)})
    raw, sent = await stream_until_answered(server.port, head, b"--" + BOUNDARY.encode() + b"\r\n", 2 * GIB)
    assert status_of(raw) == status
    assert sent < 64 << 20, f"the client had sent {sent} bytes before the refusal"
    server.assert_nothing_left()


async def test_429_stops_a_streaming_client_without_reading_its_body(start, mp3: bytes) -> None:
    server = await start(limits={"max_concurrent_uploads": 1})
    body = form(part("file", mp3, filename="a.mp3"))
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + body[:1000])  # holds the only slot
    for _ in range(500):
        if (await (await server.client.get("/health")).json())["uploads_in_progress"] == 1:
            break
        await asyncio.sleep(0.01)
    big = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(2 * GIB)})
    raw, sent = await stream_until_answered(server.port, big, b"--" + BOUNDARY.encode() + b"\r\n", 2 * GIB)
    assert status_of(raw) == 429
    assert sent < 64 << 20, f"the client had sent {sent} bytes before the refusal"
    writer.close()
    await apoll(lambda: server.temp() == [])


async def test_too_many_concurrent_uploads_get_429(start, mp3: bytes) -> None:
    server = await start(limits={"max_concurrent_uploads": 1})
    body = form(part("file", mp3, filename="a.mp3"))
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body)),
                                            "Connection": "close"})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + body[:1000])  # the first upload stays open

    async def uploads_in_progress() -> int:
        response = await server.client.get("/health")
        return int((await response.json())["uploads_in_progress"])

    for _ in range(500):
        if await uploads_in_progress() == 1:
            break
        await asyncio.sleep(0.01)
    second = await server.client.post("/upload", data=body, headers={"Content-Type": FORM_CONTENT_TYPE})
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "too_many_uploads"
    assert second.headers["Retry-After"]
    writer.write(body[1000:])
    raw = await read_until_close(reader, 10)
    writer.close()
    assert status_of(raw) == 201


async def test_low_disk_space_gets_507_before_the_body(start, mp3: bytes) -> None:
    server = await start(storage={"min_free_space": "1000TiB"})
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(GIB)})
    raw = await raw_exchange(server.port, head)
    assert status_of(raw) == 507
    assert error_code(raw) == "insufficient_storage"
    server.assert_nothing_left()


async def test_silent_client_gets_408_and_its_part_is_removed(start, mp3: bytes) -> None:
    server = await start(limits={"idle_timeout": 0.3})
    body = form(part("file", mp3, filename="a.mp3"))
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))})
    raw = await raw_exchange(server.port, head, body[: len(body) - 100], read_timeout=10)
    assert status_of(raw) == 408
    assert error_code(raw) == "upload_timeout"
    server.assert_nothing_left()


async def test_client_disconnect_mid_body_leaves_nothing(start, mp3: bytes) -> None:
    server = await start()
    first = b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="x.mp3"\r\n\r\n'
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(GIB)})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + first + mp3 + os.urandom(4 << 20))
    await writer.drain()
    await apoll(lambda: any(name.endswith(".part") for name in server.temp()))  # while the body streams
    writer.close()
    await apoll(lambda: server.temp() == [])
    server.assert_nothing_left()
    assert (await server.client.get("/health")).status == 200


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic czNjcmV0"}, 401),
    ({"Authorization": "Bearer s3cret"}, 201),
    ({"Authorization": "Bearer other-token"}, 201),
])
async def test_bearer_token_guards_uploads(start, mp3: bytes, headers: dict[str, str], status: int) -> None:
    server = await start(auth={"tokens": ["s3cret", "other-token"]})
    body = form(part("file", mp3, filename="a.mp3"))
    response = await server.client.post("/upload", data=body, headers={"Content-Type": FORM_CONTENT_TYPE, **headers})
    assert response.status == status
    if status == 401:
        assert (await response.json())["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        server.assert_nothing_left()


async def test_bearer_token_guards_files_but_not_health(start) -> None:
    server = await start(auth={"tokens": ["s3cret"]})
    assert (await server.client.get("/files")).status == 401
    assert (await server.client.get("/files", headers={"Authorization": "Bearer s3cret"})).status == 200
    assert (await server.client.get("/health")).status == 200


async def test_an_expect_value_we_do_not_support_is_a_json_417(start) -> None:
    server = await start()
    head = request_head("POST", "/upload", {
        "Content-Type": FORM_CONTENT_TYPE, "Content-Length": "1000", "Expect": "200-ok"})
    raw = await raw_exchange(server.port, head)
    assert status_of(raw) == 417
    assert error_code(raw) == "expectation_failed"
    assert b"application/json" in raw.split(b"\r\n\r\n")[0]
    server.assert_nothing_left()
