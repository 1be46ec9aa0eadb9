"""uploadsrv behind the nginx of contrib/nginx/uploadsrv.conf: the system's nginx and the
real `python -m uploadsrv` process (with `server.trust_forwarded = true`), both on loopback.

The shipped file is used as shipped but for its two addresses (the `listen` port and the
upstream port), inside a minimal nginx.conf of the test's own whose pid, logs and temp
folders lie in the test's tmp folder. The tests show what the shipped file promises:
uploads stream through unbuffered, early refusals come back as uploadsrv's JSON, and a
tus upload is told to resume at the proxy's address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import BOUNDARY, FORM_CONTENT_TYPE, ServerProcess, apoll, free_port, poll, start_process, temp_files

SHIPPED = Path(__file__).parent.parent / "contrib" / "nginx" / "uploadsrv.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx; dev.py test does it as root)")

MIB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Proxied:
    """nginx on `port` in front of the uploadsrv `server`; `folder` holds both."""

    nginx: subprocess.Popen[bytes]
    port: int
    server: ServerProcess
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def nginx_body_temp(self) -> list[str]:
        """What nginx spooled to disk from request bodies (empty when it streams them)."""
        return [str(path) for path in (self.folder / "client_body_temp").rglob("*") if path.is_file()]

    def upstream_temp_bytes(self) -> int:
        """Upload bytes uploadsrv holds in its tmp_dir (`<id>.part`): what reached it so far."""
        return sum(path.stat().st_size for path in (self.folder / "tmp").glob("*.part"))

    def left_behind(self) -> list[str]:
        return sorted(os.listdir(self.folder / "files")) + temp_files(self.folder / "tmp")


def site_config(nginx_port: int, upstream_port: int) -> str:
    """The shipped file with the test's two ports in place of 80 and 8080."""
    text = SHIPPED.read_text()
    for shipped in ("    listen 80;\n", "    server 127.0.0.1:8080;\n"):
        assert text.count(shipped) == 1, f"{SHIPPED} no longer has {shipped.strip()!r}"
    return (text.replace("    listen 80;\n", f"    listen 127.0.0.1:{nginx_port};\n")
                .replace("    server 127.0.0.1:8080;\n", f"    server 127.0.0.1:{upstream_port};\n"))


def main_config(folder: Path) -> str:
    # One process (no master/worker split): no `user` switch, so it may run as root in a
    # 0700 pytest folder, or as anyone; every path nginx writes is in `folder`.
    temp_paths = "".join(f"    {kind}_temp_path {folder / (kind + '_temp')};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n    access_log {folder / 'access.log'};\n{temp_paths}"
            f"    include {folder / 'uploadsrv.conf'};\n}}\n")


def start_nginx(folder: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    assert NGINX is not None
    port = free_port()
    (folder / "uploadsrv.conf").write_text(site_config(port, upstream_port))
    (folder / "nginx.conf").write_text(main_config(folder))
    with open(folder / "nginx.out", "wb") as out:
        process = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                    "-e", str(folder / "error.log")], stdout=out, stderr=subprocess.STDOUT)

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited with {process.returncode}: {(folder / 'nginx.out').read_text()}"
                                 f"{(folder / 'error.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    poll(serving, timeout=20)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Callable[..., Proxied]]:
    """Start uploadsrv (limits overridable, e.g. max_file_size="10MiB") behind nginx."""
    started: list[subprocess.Popen[bytes]] = []

    def factory(**limits: str) -> Proxied:
        lines = ["[server]", "trust_forwarded = true", "[storage]", 'dir = "files"', 'tmp_dir = "tmp"',
                 "min_free_space = 0", "[limits]", *(f'{key} = "{value}"' for key, value in limits.items())]
        (tmp_path / "config.toml").write_text("\n".join(lines) + "\n")
        server = start_process(tmp_path / "config.toml", tmp_path)
        started.append(server.process)
        nginx, port = start_nginx(tmp_path, server.port)
        started.append(nginx)
        return Proxied(nginx, port, server, tmp_path)

    try:
        yield factory
    finally:
        for process in reversed(started):
            stop(process)


def file_part_head(filename: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()


CLOSING = f"\r\n--{BOUNDARY}--\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[list[int], dict[str, str], bytes]:
    """Every status line's code (a 100 first, if sent), the final headers and body."""
    statuses: list[int] = []
    while True:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        statuses.append(int(lines[0].split()[1]))
        if statuses[-1] >= 200:
            break
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return statuses, headers, body


def error_code(body: bytes) -> tuple[int, str]:
    error = json.loads(body)["error"]
    return error["status"], error["code"]


@needs_nginx
async def test_a_large_upload_streams_through_nginx_without_being_spooled(
        proxied: Callable[..., Proxied], mp3: bytes) -> None:
    proxy = proxied()
    chunks, pause_after = 64, 8
    digest = hashlib.sha256(mp3)
    observed: dict[str, Any] = {}

    async def body() -> AsyncIterator[bytes]:
        yield file_part_head("long.mp3") + mp3
        for number in range(chunks):
            if number == pause_after:
                # The client holds the rest back: with request buffering nginx would wait
                # for the whole body before contacting uploadsrv, and this would time out.
                await apoll(lambda: proxy.upstream_temp_bytes() >= (pause_after // 2) * MIB, timeout=20)
                observed["spooled while streaming"] = proxy.nginx_body_temp()
            chunk = os.urandom(MIB)
            digest.update(chunk)
            yield chunk
        yield CLOSING

    length = len(file_part_head("long.mp3")) + len(mp3) + chunks * MIB + len(CLOSING)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{proxy.url}/upload", data=body(),
                                headers={"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(length)}) as response:
            assert response.status == 201, await response.text()
            record = await response.json()
    assert observed["spooled while streaming"] == []
    assert proxy.nginx_body_temp() == []
    assert (record["type"], record["size"]) == ("mp3", len(mp3) + chunks * MIB)
    assert record["sha256"] == digest.hexdigest()


@needs_nginx
async def test_an_over_limit_content_length_gets_the_json_413_through_nginx_before_any_body(
        proxied: Callable[..., Proxied]) -> None:
    proxy = proxied(max_file_size="10MiB")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write((f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
                      f"Content-Type: {FORM_CONTENT_TYPE}\r\nContent-Length: {64 * MIB}\r\n"
                      "Expect: 100-continue\r\n\r\n").encode())
        await writer.drain()
        # Not a byte of the body is sent: the answer must come anyway.
        statuses, headers, body = await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()
    # nginx answers the Expect itself (the shipped file's comment says so); the 413 is
    # uploadsrv's, passed through.
    assert statuses == [100, 413]
    assert headers["content-type"].startswith("application/json")
    assert error_code(body) == (413, "file_too_large")
    assert proxy.left_behind() == []


@needs_nginx
async def test_a_wrong_type_gets_the_json_415_through_nginx_after_a_sliver_of_a_1gib_body(
        proxied: Callable[..., Proxied]) -> None:
    proxy = proxied()
    declared = 1 << 30
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        first = file_part_head("song.mp3") + b"PK\x03\x04" + os.urandom(MIB)  # a zip, named .mp3
        writer.write((f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
                      f"Content-Type: {FORM_CONTENT_TYPE}\r\nContent-Length: {declared}\r\n\r\n").encode() + first)
        await writer.drain()
        # The client sends nothing more until it has the answer.
        statuses, headers, body = await asyncio.wait_for(read_response(reader), 10)
        assert statuses == [415]
        assert error_code(body) == (415, "unsupported_file_type")
        assert len(first) < declared // 500

        # A client that keeps sending anyway is cut off after the shipped lingering_time
        # (5s), not after the whole 1 GiB or nginx's default 30 s.
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            while time.monotonic() - started < 20:
                writer.write(os.urandom(256 << 10))
                await asyncio.wait_for(writer.drain(), 10)
                await asyncio.sleep(0.05)
        assert time.monotonic() - started < 10
    finally:
        writer.close()
    await apoll(lambda: proxy.left_behind() == [], timeout=10)


@needs_nginx
async def test_a_tus_upload_through_nginx_is_located_at_the_proxy_and_resumes_after_a_cut(
        proxied: Callable[..., Proxied], mp3: bytes) -> None:
    proxy = proxied()
    data = mp3 + os.urandom(6 * MIB)
    first = 2 * MIB
    async with aiohttp.ClientSession() as session:
        # uploadsrv trusts X-Forwarded-*, so nginx must overwrite what a client sends.
        async with session.post(f"{proxy.url}/files", headers={
                **TUS, "Upload-Length": str(len(data)),
                "Upload-Metadata": "filename " + base64.b64encode(b"take.mp3").decode(),
                "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}) as response:
            assert response.status == 201, await response.text()
            location = response.headers["Location"]
        upload_id = location.rsplit("/", 1)[1]
        assert location == f"{proxy.url}/files/{upload_id}"

        async with session.patch(location, data=io.BytesIO(data[:first]), headers={
                **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}) as response:
            assert response.status == 204, await response.text()
            assert response.headers["Upload-Offset"] == str(first)

        # The next PATCH is cut off after 2 MiB of its 4+ MiB: the bytes nginx passed on
        # are kept, and HEAD (through nginx) says where to resume.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write((f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
                      f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {first}\r\n"
                      f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data) - first}\r\n\r\n"
                      ).encode() + data[first:2 * first])
        await writer.drain()
        await apoll(lambda: proxy.upstream_temp_bytes() >= first + MIB, timeout=10)
        writer.transport.abort()
        await apoll(lambda: not any(name.startswith("locks/") for name in temp_files(proxy.folder / "tmp")),
                    timeout=10)

        async with session.head(location, headers=TUS) as response:
            assert response.status == 200
            assert response.headers["Upload-Length"] == str(len(data))
            offset = int(response.headers["Upload-Offset"])
        assert first + MIB <= offset <= 2 * first

        async with session.patch(location, data=io.BytesIO(data[offset:]), headers={
                **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}) as response:
            assert response.status == 204, await response.text()
            assert response.headers["Upload-Offset"] == str(len(data))

        async with session.get(f"{proxy.url}/files/{upload_id}/info") as response:
            record = await response.json()
        async with session.get(location, headers={"Range": "bytes=0-99"}) as response:
            assert response.status == 206
            assert await response.read() == data[:100]
    assert (record["size"], record["type"], record["filename"]) == (len(data), "mp3", "take.mp3")
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert proxy.nginx_body_temp() == []
