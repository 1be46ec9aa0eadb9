"""End to end: the real `python -m uploadsrv` process, driven by curl."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from support import ServerProcess, free_port, poll, start_process, temp_files

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")  # the image has it


@pytest.fixture
def served(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "store/files"\ntmp_dir = "store/tmp"\nmin_free_space = 0\n'
                      '[limits]\nmax_file_size = "32MiB"\n')
    server = start_process(config, tmp_path)
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def curl(*args: str) -> tuple[str, dict]:
    """Run curl; return its -w summary line and the JSON body it received."""
    result = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{size_upload}", *args],
                            capture_output=True, text=True, timeout=60)
    body, _, summary = result.stdout.rpartition("\n")
    return summary, (json.loads(body) if body.strip().startswith("{") else {})


def test_curl_upload_then_download(served: ServerProcess, tmp_path: Path, media_samples) -> None:
    source = media_samples["mp3_id3"]
    summary, record = curl("-F", f"file=@{source};filename=take 1.mp3", "-F", "description=first take",
                           f"{served.url}/upload")
    assert summary.split()[0] == "201"
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["filename"] == "take 1.mp3"
    assert record["fields"] == {"description": "first take"}
    stored = tmp_path / "store" / "files" / f"{record['id']}.mp3"
    assert stored.read_bytes() == source.read_bytes()
    out = tmp_path / "download.bin"
    fetched = subprocess.run(["curl", "-sS", "-r", "0-99", "-o", str(out), "-w", "%{http_code}",
                              f"{served.url}{record['url']}"], capture_output=True, text=True, timeout=30)
    assert fetched.stdout == "206"
    assert out.read_bytes() == source.read_bytes()[:100]


def test_curl_wrong_type_is_refused_before_the_body_is_sent(served: ServerProcess, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    with open(junk, "wb") as handle:
        handle.truncate(30 << 20)  # 30 MiB of zeros: under the size limit, not audio
    summary, body = curl("-H", "Expect:", "-F", f"file=@{junk}", f"{served.url}/upload")
    status, uploaded = summary.split()
    assert status == "415"
    assert body["error"]["code"] == "unsupported_file_type"
    assert int(uploaded) < 30 << 20
    poll(lambda: temp_files(tmp_path / "store" / "tmp") == [])


def test_curl_oversized_upload_gets_413_without_sending_the_body(served: ServerProcess, tmp_path: Path) -> None:
    big = tmp_path / "big.mp3"
    with open(big, "wb") as handle:
        handle.truncate(64 << 20)
    summary, body = curl("-F", f"file=@{big}", f"{served.url}/upload")  # curl sends Expect: 100-continue
    assert summary.split() == ["413", "0"]
    assert body["error"]["code"] == "file_too_large"


def test_sigterm_stops_the_server_with_status_0(served: ServerProcess) -> None:
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0


def test_sigterm_aborts_an_unfinished_upload_and_removes_its_part(tmp_path: Path, media_samples) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nshutdown_timeout = "1s"\n[storage]\nmin_free_space = 0\n')
    server = start_process(config, tmp_path)
    boundary = "B0undary"
    head = (f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {1 << 30}\r\n\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n').encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + media_samples["mp3_id3"].read_bytes() + os.urandom(3 << 20))
        tmp = tmp_path / "data" / "tmp"
        poll(lambda: tmp.is_dir() and len([n for n in temp_files(tmp) if n.endswith(".part")]) == 1)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    assert temp_files(tmp) == []
    assert os.listdir(tmp_path / "data" / "files") == []


def test_defaults_without_config_put_data_under_the_working_folder(tmp_path: Path, media_samples) -> None:
    server = start_process(None, tmp_path, "--host", "127.0.0.1")
    try:
        summary, record = curl("-F", f"file=@{media_samples['flac']}", f"{server.url}/upload")
        assert summary.split()[0] == "201"
        assert (tmp_path / "data" / "files" / f"{record['id']}.json").exists()
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is not installed")
def test_systemd_socket_activation_wins_over_the_configured_port(tmp_path: Path) -> None:
    configured, activated = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nport = {configured}\n[storage]\nmin_free_space = 0\n')
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{activated}", "--",
         sys.executable, "-m", "uploadsrv", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers(port: int) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        poll(lambda: answers(activated), timeout=30)
        assert not answers(configured)
    finally:
        activator.send_signal(signal.SIGTERM)
        activator.wait(timeout=30)


def test_a_port_in_use_stops_start_up_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "uploadsrv", "--port", str(port)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("uploadsrv: cannot start:")
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev,
                    reason="needs two filesystems")
def test_tmp_dir_on_another_filesystem_stops_start_up(tmp_path: Path) -> None:
    other = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        config = tmp_path / "config.toml"
        config.write_text(f'[storage]\ndir = "files"\ntmp_dir = "{other}"\n')
        result = subprocess.run([sys.executable, "-m", "uploadsrv", "--config", str(config), "--port", "0"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(other)
    assert result.returncode == 1
    assert "same filesystem" in result.stderr
    assert "Traceback" not in result.stderr


def _minor_faults(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[7])


def test_body_buffers_come_from_the_heap_not_fresh_pages(tmp_path: Path, mp3: bytes) -> None:
    # The process tunes glibc malloc (uploadsrv/allocator.py): without it, each 64 MiB
    # upload re-faulted its body buffers from fresh mmaps, ~4,400-5,000 minor page
    # faults; with it, ~260-520 once the heap has grown to its working size.
    source = tmp_path / "long.mp3"
    source.write_bytes(mp3 + bytes(64 << 20))
    server = start_process(None, tmp_path, "--host", "127.0.0.1")
    try:
        faults = []
        for _ in range(3):
            before = _minor_faults(server.process.pid)
            summary, record = curl("-H", "Expect:", "-F", f"file=@{source}", f"{server.url}/upload")
            assert summary.split()[0] == "201", record
            faults.append(_minor_faults(server.process.pid) - before)
        # The first upload grows the heap; the later ones must reuse it.
        assert max(faults[1:]) < 1500, faults
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
