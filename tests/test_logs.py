"""Logs of the real process, as an operator reads them: one access line per request, one
line per upload outcome, JSON when asked, no token, no raw control character, and a
client that leaves mid-upload logged as its abort (499), not as a fault of ours."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from support import BOUNDARY, FORM_CONTENT_TYPE, ServerProcess, form, part, poll, request_head, start_process

TOKEN = "tok-3xSECRETx9"


def serve(tmp_path: Path, extra: str = "") -> ServerProcess:
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n'
                      '[server]\nworkers = 1\n[logging]\nformat = "json"\n'
                      f'[auth]\ntokens = ["{TOKEN}"]\n' + extra)
    return start_process(config, tmp_path)


def lines(server: ServerProcess) -> list[dict]:
    entries = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)


def test_requests_and_outcomes_are_logged_as_json_without_secrets(tmp_path: Path, mp3: bytes) -> None:
    server = serve(tmp_path)
    try:
        good = tmp_path / "talk.mp3"
        good.write_bytes(mp3)
        bad = tmp_path / "evil\x1b[31m.mp3"
        bad.write_bytes(os.urandom(5000))
        auth = ["-H", f"Authorization: Bearer {TOKEN}"]
        stored = json.loads(curl(*auth, "-F", f"file=@{good}", f"{server.url}/upload").stdout)
        curl(*auth, "-F", f"file=@{bad}", f"{server.url}/upload")
        curl(f"{server.url}/files/%1b%5b31mX")  # a control character in the path, no token

        def logged() -> list[dict]:  # the access lines, less start_process's /health polls
            return [entry for entry in lines(server) if entry.get("method") and entry.get("path") != "/health"]
        poll(lambda: len(logged()) >= 3)
        access = logged()
        first = access[0]
        assert (first["method"], first["path"], first["status"]) == ("POST", "/upload", 201)
        assert first["bytes_in"] > len(mp3) and first["bytes_out"] > 0 and first["seconds"] >= 0
        assert first["upload_id"] == stored["id"] and first["client"] == "127.0.0.1"
        assert access[1]["status"] == 415
        assert access[2]["status"] == 401 and "\x1b" not in access[2]["path"]
        outcomes = [entry for entry in lines(server) if entry["logger"] == "uploadsrv.uploads"]
        assert any(stored["sha256"] in entry["message"] and "type=mp3" in entry["message"] for entry in outcomes)
        assert any("code=unsupported_file_type" in entry["message"] for entry in outcomes)
        text = server.log.read_text(errors="replace")
        assert TOKEN not in text and "\x1b" not in text
    finally:
        server.process.terminate()
        server.process.wait(10)


def test_a_client_that_leaves_mid_upload_is_its_abort_not_a_500(tmp_path: Path, mp3: bytes) -> None:
    server = serve(tmp_path)
    try:
        body = form(part("file", mp3 + os.urandom(4 << 20), filename="a.mp3"))
        head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body)),
                                                "Authorization": f"Bearer {TOKEN}"})
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + body[: len(body) // 2])
            poll(lambda: any(name.endswith(".part") for name in os.listdir(tmp_path / "tmp")))
        poll(lambda: any(entry.get("method") == "POST" for entry in lines(server)))
        [access] = [entry for entry in lines(server) if entry.get("method") == "POST"]
        assert access["status"] == 499
        text = server.log.read_text(errors="replace")
        assert "Traceback" not in text and " 500 " not in text
        assert any("client_aborted" in entry["message"] for entry in lines(server))
    finally:
        server.process.terminate()
        server.process.wait(10)


def test_text_format_is_the_default_and_level_filters(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n'
                      '[server]\nworkers = 1\n[logging]\nlevel = "warning"\n')
    server = start_process(config, tmp_path)
    try:
        curl(f"{server.url}/health")
        server.process.terminate()
        server.process.wait(10)
        text = server.log.read_text()
        assert "GET /health" not in text  # access lines are info
        assert not any(line.startswith("{") for line in text.splitlines())
    finally:
        if server.process.poll() is None:
            server.process.kill()
