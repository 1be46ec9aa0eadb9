"""The run (uploadsrv/server.py) on the real `python -m uploadsrv` process: the drain on
SIGTERM, and `--version`.

Uploads here are raw sockets, so that a test decides exactly when the body stops and
resumes around the signal.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import (
    FORM_CONTENT_TYPE, ServerProcess, form, part, poll, request_head, start_process, status_of, temp_files,
)

MIB = 1 << 20


@pytest.fixture
def stop_at_end():
    """Kill what a test left running, so that a failed assertion leaves no server behind."""
    servers: list[ServerProcess] = []
    yield servers.append
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def start(tmp_path: Path, shutdown_timeout: str) -> ServerProcess:
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nshutdown_timeout = "{shutdown_timeout}"\n'
                      '[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n')
    return start_process(config, tmp_path)


def begin_upload(server: ServerProcess, payload: bytes, sent: int) -> tuple[socket.socket, bytes]:
    """Send the head and the first `sent` bytes of the form; wait until the server counts the upload."""
    body = form(part("file", payload, filename="drain.mp3", content_type="audio/mpeg"))
    head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))})
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head + body[:sent])
    poll(lambda: uploads_in_progress(server) == 1)
    return sock, body[sent:]


def uploads_in_progress(server: ServerProcess) -> int:
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
        return int(json.load(response)["uploads_in_progress"])


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def log_says(server: ServerProcess, text: str) -> bool:
    return text in server.log.read_text()


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_a_streaming_upload_finish_and_refuses_new_connections(
        tmp_path: Path, mp3: bytes, stop_at_end) -> None:
    server = start(tmp_path, "10s")
    stop_at_end(server)
    payload = mp3 + os.urandom(4 * MIB)
    sock, rest = begin_upload(server, payload, len(mp3) + 3 * MIB)
    with sock:
        server.process.send_signal(signal.SIGTERM)
        poll(lambda: log_says(server, "waiting up to 10s for 1 upload"))
        assert refuses_connections(server.port)
        assert server.process.poll() is None, "the server exited while an upload was still arriving"
        sock.sendall(rest)
        raw = read_until_closed(sock)
    assert status_of(raw) == 201, raw[:500]
    record = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["size"] == len(payload)
    assert server.process.wait(timeout=10) == 0
    assert sorted(os.listdir(tmp_path / "files")) == sorted([f"{record['id']}.mp3", f"{record['id']}.json"])
    assert temp_files(tmp_path / "tmp") == []
    assert log_says(server, "all requests finished")


def test_an_upload_stalled_past_the_grace_is_aborted_and_cleaned_up(
        tmp_path: Path, mp3: bytes, stop_at_end) -> None:
    server = start(tmp_path, "1s")
    stop_at_end(server)
    sock, _ = begin_upload(server, mp3 + os.urandom(4 * MIB), len(mp3) + 3 * MIB)
    with sock:
        # The part exists (the first batch was written), so the test can see it removed.
        poll(lambda: [name for name in temp_files(tmp_path / "tmp") if name.endswith(".part")] != [])
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        took = time.monotonic() - signalled
    assert took >= 1.0, f"exited {took:.2f}s after SIGTERM, before the 1s grace"
    assert os.listdir(tmp_path / "files") == []
    assert temp_files(tmp_path / "tmp") == []
    assert log_says(server, "aborted 1 upload still running after 1s")


def test_a_second_sigterm_ends_the_grace_early(tmp_path: Path, mp3: bytes, stop_at_end) -> None:
    server = start(tmp_path, "60s")
    stop_at_end(server)
    sock, _ = begin_upload(server, mp3 + os.urandom(4 * MIB), len(mp3) + 3 * MIB)
    with sock:
        server.process.send_signal(signal.SIGTERM)
        poll(lambda: log_says(server, "waiting up to 60s for 1 upload"))
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
    assert log_says(server, "aborted 1 upload still running after")
    assert temp_files(tmp_path / "tmp") == []


def test_sigint_stops_an_idle_server_with_status_0(tmp_path: Path, stop_at_end) -> None:
    server = start(tmp_path, "30s")
    stop_at_end(server)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=10) == 0
    assert log_says(server, "SIGINT: stopping")
    assert "Traceback" not in server.log.read_text()


def test_version_is_the_installed_package_version() -> None:
    result = subprocess.run([sys.executable, "-m", "uploadsrv", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parent.parent / "setup.cfg")
    declared = setup["metadata"]["version"]
    assert importlib.metadata.version("uploadsrv") == declared
    assert result.stdout == f"uploadsrv {declared}\n"


def test_the_upload_subcommand_is_the_uploader() -> None:
    """`uploadsrv upload ...` runs the resumable uploader (tests/test_uploader.py drives it)."""
    result = subprocess.run([sys.executable, "-m", "uploadsrv", "upload", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "--url" in result.stdout and "resum" in result.stdout.lower()
    usage = subprocess.run([sys.executable, "-m", "uploadsrv", "upload"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2
