"""Crash and restart: the real server is killed with SIGKILL in the middle of PATCHes at
random points, then restarted on the same storage. HEAD must report at least the last
acknowledged offset, the client resumes from there, and the finished file's SHA-256 equals
the source's. The default run kills it a few times; `-m slow` runs the 50-kill version.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import ServerProcess, poll, start_process

TUS = {"Tus-Resumable": "1.0.0"}


def request(server: ServerProcess, method: str, path: str, headers: dict[str, str],
            body: bytes = b"") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


class Client:
    """Sends PATCHes of random sizes until told to stop or the server dies; remembers the
    highest offset the server acknowledged."""

    def __init__(self, server: ServerProcess, path: str, data: bytes, offset: int, seed: int) -> None:
        self.server, self.path, self.data, self.offset = server, path, data, offset
        self.acknowledged = offset
        self.sent_up_to = offset
        self._random = random.Random(seed)

    def run(self) -> None:
        try:
            while self.offset < len(self.data):
                size = self._random.choice((1, 7, 4096, 65_536, 300_000, 1 << 20))
                chunk = self.data[self.offset : self.offset + size]
                self.sent_up_to = self.offset + len(chunk)
                response = request(self.server, "PATCH", self.path, {
                    **TUS, "Upload-Offset": str(self.offset), "Content-Type": "application/offset+octet-stream",
                }, chunk)
                assert response.status == 204, response.status
                self.offset = int(response.headers["Upload-Offset"])
                self.acknowledged = self.offset
        except (OSError, http.client.HTTPException):
            pass  # the server was killed under us


def start(config: Path, cwd: Path) -> ServerProcess:
    return start_process(config, cwd)


def crash_and_resume(tmp_path: Path, mp3: bytes, kills: int, size: int) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n')
    data = mp3 + os.urandom(size)
    server = start(config, tmp_path)
    created = request(server, "POST", "/files", {**TUS, "Upload-Length": str(len(data))})
    assert created.status == 201
    path = urlsplit(created.headers["Location"]).path
    acknowledged = 0
    progress: list[tuple[int, int]] = []
    seeds = random.Random(1234)
    try:
        for kill in range(kills):
            client = Client(server, path, data, acknowledged, seeds.randrange(1 << 30))
            thread = threading.Thread(target=client.run)
            thread.start()
            # Once this round has stored something (a freshly started server can be slower
            # to take its first PATCH than the shortest delay), a random point in the
            # middle of the PATCHes that follow.
            poll(lambda: client.acknowledged > acknowledged or not thread.is_alive(), timeout=20)
            threading.Event().wait(seeds.uniform(0.0, 0.03))
            server.process.kill()
            server.process.wait()
            thread.join(30)
            server = start(config, tmp_path)
            offset = int(request(server, "HEAD", path, TUS).headers["Upload-Offset"])
            assert client.acknowledged <= offset <= client.sent_up_to, (kill, client.acknowledged, offset)
            progress.append((client.acknowledged, offset))
            acknowledged = offset
        # The kills landed mid-upload: some after bytes beyond the last acknowledgement.
        assert len(progress) == kills and all(0 < offset < len(data) for _, offset in progress[:-1])
        finisher = Client(server, path, data, acknowledged, 99)
        finisher.run()
        assert finisher.acknowledged == len(data)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", path + "/info")
        body = json.loads(connection.getresponse().read())
        connection.close()
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert body["size"] == len(data)
    finally:
        server.process.kill()
        server.process.wait()


def test_kill_9_mid_patch_keeps_every_acknowledged_byte(tmp_path: Path, mp3: bytes) -> None:
    crash_and_resume(tmp_path, mp3, kills=3, size=64 << 20)


@pytest.mark.slow
def test_kill_9_fifty_times_at_random_points(tmp_path: Path, mp3: bytes) -> None:
    crash_and_resume(tmp_path, mp3, kills=50, size=400 << 20)


def test_a_dropped_patch_keeps_every_byte_that_arrived(tmp_path: Path, mp3: bytes) -> None:
    """The client sends part of a PATCH body and vanishes: every byte that reached the
    server, those still unread in its buffers included, is stored and reported by HEAD."""
    import socket

    from support import poll, request_head

    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n')
    server = start(config, tmp_path)
    try:
        data = mp3 + os.urandom(32 << 20)
        created = request(server, "POST", "/files", {**TUS, "Upload-Length": str(len(data))})
        path = urlsplit(created.headers["Location"]).path
        for sent in (5 << 20, (9 << 20) + 12345):
            offset = int(request(server, "HEAD", path, TUS).headers["Upload-Offset"])
            with socket.create_connection(("127.0.0.1", server.port)) as stream:
                stream.sendall(request_head("PATCH", path, {
                    **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(len(data) - offset)}) + data[offset : offset + sent])
            poll(lambda: not any((tmp_path / "tmp" / "locks").glob("*.lock")))
            assert int(request(server, "HEAD", path, TUS).headers["Upload-Offset"]) == offset + sent
    finally:
        server.process.kill()
        server.process.wait()
