"""Several worker processes (uploadsrv/workers.py) on the real `python -m uploadsrv` process.

Which worker serves a request is the kernel's choice; a test that needs a given worker
opens connections until /health on one of them names that worker's pid, then sends its
request on that same keep-alive connection (one connection is served by one worker).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import FORM_CONTENT_TYPE, ServerProcess, form, part, poll, start_process

from uploadsrv.cli import worker_count
from uploadsrv.config import ConfigError, config_from_mapping

WORKERS = 3
MIB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


def write_config(folder: Path, sections: dict[str, dict[str, Any]]) -> Path:
    data: dict[str, dict[str, Any]] = {
        "server": {"workers": WORKERS, "shutdown_timeout": "10s"},
        "storage": {"dir": "files", "tmp_dir": "tmp", "min_free_space": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    text = "".join(f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
                   for name, values in data.items())
    path = folder / "config.toml"
    path.write_text(text)
    return path


def workers_of(server: ServerProcess) -> set[int]:
    """The main process's children, from /proc."""
    pids: set[int] = set()
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        try:
            pids |= {int(pid) for pid in (task / "children").read_text().split()}
        except FileNotFoundError:
            pass  # the task ended
    return pids


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def log_lines(server: ServerProcess, text: str) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if text in line]


def pid_of(line: str) -> int:
    """The pid in a log line: '... uploadsrv[1234]: ...'."""
    return int(line.split("[", 1)[1].split("]", 1)[0])


@pytest.fixture
def start_group(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start the server with 3 workers (config sections overridden); wait until all serve."""
    started: list[ServerProcess] = []

    def start(**sections: dict[str, Any]) -> ServerProcess:
        # --workers too: it wins over the config, should start_process ever pass its own.
        server = start_process(write_config(tmp_path, sections), tmp_path, "--workers", str(WORKERS))
        started.append(server)
        poll(lambda: bool(log_lines(server, f"serving with {WORKERS} workers")), timeout=20)
        assert len(workers_of(server)) == WORKERS
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            pids = workers_of(server)
            server.process.kill()  # its workers die with it (PR_SET_PDEATHSIG)
            server.process.wait()
            poll(lambda: not any(alive(pid) for pid in pids))


def connect(server: ServerProcess, wanted: Callable[[int], bool]) -> tuple[http.client.HTTPConnection, int]:
    """A keep-alive connection served by a worker whose pid is `wanted`."""
    deadline = time.monotonic() + 30  # by time: which worker accepts is the kernel's race
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        connection.request("GET", "/health")
        pid = int(json.loads(connection.getresponse().read())["worker"])
        if wanted(pid):
            return connection, pid
        connection.close()
    raise AssertionError("no connection reached the wanted worker in 30 s")


def call(connection: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str],
         body: bytes = b"") -> tuple[http.client.HTTPResponse, bytes]:
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response, response.read()


def health(server: ServerProcess) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        return json.loads(call(connection, "GET", "/health", {})[1])
    finally:
        connection.close()


def one_shot(payload: bytes, name: str = "a.mp3") -> tuple[bytes, dict[str, str]]:
    body = form(part("file", payload, filename=name, content_type="audio/mpeg"))
    return body, {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))}


def begin_upload(server: ServerProcess, payload: bytes, wanted: Callable[[int], bool],
                 sent: int) -> tuple[http.client.HTTPConnection, int, bytes]:
    """A one-shot upload on a wanted worker, its first `sent` body bytes sent; returns the rest."""
    before = health(server)["uploads_in_progress"]
    connection, pid = connect(server, wanted)
    body, headers = one_shot(payload)
    connection.putrequest("POST", "/upload")
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    connection.send(body[:sent])
    poll(lambda: health(server)["uploads_in_progress"] == before + 1)
    return connection, pid, body[sent:]


def create_tus(server: ServerProcess, length: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    response, _ = call(connection, "POST", "/files", {**TUS, "Upload-Length": str(length)})
    connection.close()
    assert response.status == 201
    return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


def patch_headers(offset: int, length: int) -> dict[str, str]:
    return {**TUS, "Upload-Offset": str(offset), "Content-Length": str(length),
            "Content-Type": "application/offset+octet-stream"}


def stored_sha256(server: ServerProcess, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    response, body = call(connection, "GET", f"{path}/info", {})
    connection.close()
    assert response.status == 200, body
    return str(json.loads(body)["sha256"])


def test_worker_count_is_one_per_usable_core_up_to_8_unless_configured(tmp_path: Path) -> None:
    assert worker_count(0) == min(len(os.sched_getaffinity(0)), 8)
    assert worker_count(3) == 3
    assert config_from_mapping({}, tmp_path).server.workers == 0
    for bad in (-1, 65, "2", True):
        with pytest.raises(ConfigError, match="server.workers"):
            config_from_mapping({"server": {"workers": bad}}, tmp_path)


def test_health_and_uploads_are_answered_by_every_worker(start_group, mp3: bytes) -> None:
    server = start_group()
    workers = workers_of(server)
    # Which worker accepts a connection is the kernel's race: on a busy machine one worker
    # can lose it many times in a row, so poll by time, not by a count.
    answered = set()
    deadline = time.monotonic() + 30
    while answered != workers and time.monotonic() < deadline:
        answered.add(health(server)["worker"])
    assert answered == workers
    # On each worker at once: a one-shot upload, then a tus upload on the same connection.
    payloads = {pid: mp3 + os.urandom(4 * MIB) for pid in workers}
    results: dict[int, list[Any]] = {}

    def upload(pid: int) -> None:
        connection, _ = connect(server, lambda answered_by: answered_by == pid)
        body, headers = one_shot(payloads[pid])
        response, raw = call(connection, "POST", "/upload", headers, body)
        results[pid] = [response.status, json.loads(raw)["sha256"]]
        response, _ = call(connection, "POST", "/files", {**TUS, "Upload-Length": str(len(payloads[pid]))})
        path = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
        response, _ = call(connection, "PATCH", path, patch_headers(0, len(payloads[pid])), payloads[pid])
        results[pid] += [response.status, path]
        connection.close()

    threads = [threading.Thread(target=upload, args=(pid,)) for pid in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == sorted(workers)
    for pid, (status, sha256, tus_status, path) in results.items():
        assert (status, tus_status) == (201, 204)
        assert sha256 == stored_sha256(server, path) == hashlib.sha256(payloads[pid]).hexdigest()
    assert health(server)["uploads_in_progress"] == 0


def test_a_tus_upload_whose_patches_land_on_different_workers_completes_and_is_locked(
        start_group, mp3: bytes) -> None:
    server = start_group()
    data = mp3 + os.urandom(6 * MIB)
    path = create_tus(server, len(data))
    chunks = [(0, len(mp3) + MIB), (len(mp3) + MIB, len(mp3) + 3 * MIB)]
    served_by: list[int] = []
    for start, end in chunks:
        connection, pid = connect(server, lambda pid: not served_by or pid != served_by[-1])
        response, _ = call(connection, "PATCH", path, patch_headers(start, end - start), data[start:end])
        connection.close()
        assert response.status == 204 and int(response.headers["Upload-Offset"]) == end
        served_by.append(pid)
    # The next PATCH stays in flight on one worker; another worker must refuse a second
    # writer for the same upload (the per-upload flock holds across processes).
    offset = chunks[-1][1]
    holder, holder_pid = connect(server, lambda pid: pid != served_by[-1])
    holder.putrequest("PATCH", path)
    for key, value in patch_headers(offset, len(data) - offset).items():
        holder.putheader(key, value)
    holder.endheaders()
    holder.send(data[offset : offset + MIB])
    poll(lambda: health(server)["uploads_in_progress"] == 1)
    rival, rival_pid = connect(server, lambda pid: pid != holder_pid)
    response, body = call(rival, "PATCH", path, patch_headers(offset, 10), data[offset : offset + 10])
    rival.close()
    assert response.status == 423, body
    holder.send(data[offset + MIB :])
    response = holder.getresponse()
    response.read()
    holder.close()
    assert response.status == 204
    served_by.append(holder_pid)
    assert len(set(served_by)) >= 2 and served_by[0] != served_by[1], served_by
    assert stored_sha256(server, path) == hashlib.sha256(data).hexdigest()


def test_kill_9_of_a_worker_mid_patch_loses_no_acknowledged_byte_and_it_is_replaced(
        start_group, mp3: bytes, tmp_path: Path) -> None:
    server = start_group()
    data = mp3 + os.urandom(12 * MIB)
    path = create_tus(server, len(data))
    first, _ = connect(server, lambda pid: True)
    response, _ = call(first, "PATCH", path, patch_headers(0, len(mp3) + MIB), data[: len(mp3) + MIB])
    first.close()
    acknowledged = int(response.headers["Upload-Offset"])
    victim, victim_pid = connect(server, lambda pid: True)
    victim.putrequest("PATCH", path)
    for key, value in patch_headers(acknowledged, len(data) - acknowledged).items():
        victim.putheader(key, value)
    victim.endheaders()
    sent = acknowledged + 6 * MIB
    victim.send(data[acknowledged:sent])
    part = tmp_path / "tmp" / f"{path.rsplit('/', 1)[1]}.part"
    poll(lambda: part.stat().st_size > acknowledged)  # bytes written, none acknowledged yet
    os.kill(victim_pid, signal.SIGKILL)
    victim.close()
    poll(lambda: bool(log_lines(server, f"(pid {victim_pid}) was killed by SIGKILL; starting a new one")))
    poll(lambda: len(workers_of(server)) == WORKERS and victim_pid not in workers_of(server))
    assert health(server)["uploads_in_progress"] == 0  # its slot went with it

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    response, _ = call(connection, "HEAD", path, TUS)
    offset = int(response.headers["Upload-Offset"])
    assert acknowledged <= offset <= sent
    response, body = call(connection, "PATCH", path, patch_headers(offset, len(data) - offset), data[offset:])
    connection.close()
    assert response.status == 204, body
    assert stored_sha256(server, path) == hashlib.sha256(data).hexdigest()


def test_the_upload_limit_is_the_whole_servers_and_a_dead_workers_slots_come_back(
        start_group, mp3: bytes) -> None:
    server = start_group(limits={"max_concurrent_uploads": 2})
    held: list[tuple[http.client.HTTPConnection, int, bytes]] = []
    for _ in range(2):
        taken = {pid for _, pid, _ in held}
        held.append(begin_upload(server, mp3 + os.urandom(2 * MIB), lambda pid: pid not in taken, len(mp3)))
    assert health(server)["uploads_in_progress"] == 2
    # A third upload is refused whichever worker takes it, the idle one included.
    for worker in workers_of(server):
        connection, _ = connect(server, lambda pid: pid == worker)
        body, headers = one_shot(mp3)
        response, raw = call(connection, "POST", "/upload", headers, body)
        connection.close()
        assert response.status == 429, (worker, raw)
        assert json.loads(raw)["error"]["code"] == "too_many_uploads"
    # A worker killed while holding a slot gives it back through the supervisor.
    dead_connection, dead_pid, _ = held.pop(0)
    os.kill(dead_pid, signal.SIGKILL)
    dead_connection.close()
    poll(lambda: health(server)["uploads_in_progress"] == 1)
    connection, rest = held[0][0], held[0][2]
    connection.send(rest)
    response = connection.getresponse()
    assert response.status == 201, response.read()
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    body, headers = one_shot(mp3)
    assert call(connection, "POST", "/upload", headers, body)[0].status == 201
    connection.close()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """Stands in for systemd's notify socket; the server started next inherits it."""
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:  # AF_UNIX paths are short
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(f"{folder}/notify")
        listener.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", f"{folder}/notify")
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        yield listener
        listener.close()


def receive_until(listener: socket.socket, line: str) -> list[str]:
    """Every line received up to and including the message that holds `line`."""
    received: list[str] = []
    while line not in received:
        received += listener.recv(4096).decode().split("\n")
    return received


def metrics_folders(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"uploadsrv-metrics-{pid}-*"))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_sigterm_drains_every_worker_and_systemd_hears_about_the_whole_group(
        start_group, notify_socket: socket.socket, mp3: bytes) -> None:
    # The metrics folder of a server killed with -9 is removed by the next one.
    left_behind = Path(tempfile.mkdtemp(prefix=f"uploadsrv-metrics-{dead_pid()}-"))
    server = start_group()
    assert not left_behind.exists()
    assert len(metrics_folders(server.process.pid)) == 1  # PROMETHEUS_MULTIPROC_DIR for the workers
    before_ready = receive_until(notify_socket, "READY=1")  # sent once all three serve
    serving = {pid_of(line) for line in log_lines(server, "serving on http")}
    assert serving == workers_of(server)
    assert "STATUS=serving; 0 uploads in progress" in before_ready
    assert "WATCHDOG=1" in receive_until(notify_socket, "WATCHDOG=1")

    payloads = [mp3 + os.urandom(3 * MIB) for _ in range(2)]
    uploads: list[tuple[http.client.HTTPConnection, int, bytes]] = []
    for payload in payloads:
        taken = {pid for _, pid, _ in uploads}
        uploads.append(begin_upload(server, payload, lambda pid: pid not in taken, len(mp3) + MIB))
    receive_until(notify_socket, "STATUS=serving; 2 uploads in progress")

    workers = workers_of(server)
    server.process.send_signal(signal.SIGTERM)
    assert "STOPPING=1" in receive_until(notify_socket, "STOPPING=1")
    poll(lambda: len(log_lines(server, "waiting up to 10s for 1 upload")) == 2)
    assert {pid_of(line) for line in log_lines(server, "waiting up to")} == {pid for _, pid, _ in uploads}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    assert server.process.poll() is None
    for (connection, _, rest), payload in zip(uploads, payloads):
        connection.send(rest)
        response = connection.getresponse()
        record = json.loads(response.read())
        connection.close()
        assert response.status == 201
        assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert server.process.wait(timeout=20) == 0
    assert not any(alive(pid) for pid in workers)
    assert {pid_of(line) for line in log_lines(server, ": stopped")} == {*workers, server.process.pid}
    assert "Traceback" not in server.log.read_text()
    assert metrics_folders(server.process.pid) == []


def test_one_worker_is_a_single_process_that_tells_systemd_itself(
        tmp_path: Path, notify_socket: socket.socket) -> None:
    server = start_process(write_config(tmp_path, {"server": {"workers": 1}}), tmp_path, "--workers", "1")
    try:
        assert "READY=1" in receive_until(notify_socket, "READY=1")
        assert workers_of(server) == set()
        assert health(server)["worker"] == server.process.pid
        assert metrics_folders(server.process.pid) == []
        server.process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in receive_until(notify_socket, "STOPPING=1")
        assert server.process.wait(timeout=20) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    assert not log_lines(server, "worker 0 started")


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_one_worker_runs_the_cleanup_and_another_takes_over_when_it_dies(start_group, tmp_path: Path) -> None:
    server = start_group(cleanup={"interval": "0.2s", "partial_expiry": "10m"})

    def stale(name: str) -> Path:
        path = tmp_path / "tmp" / f"{name}.part"
        path.write_bytes(b"x")
        age(path, 3600)
        return path

    first = stale("stale1")
    poll(lambda: not first.exists())
    [leader_line] = log_lines(server, "runs the cleanup passes")
    leader = pid_of(leader_line)
    assert leader in workers_of(server)
    second = stale("stale2")
    poll(lambda: not second.exists())
    assert len(log_lines(server, "runs the cleanup passes")) == 1  # the others kept out
    assert {pid_of(line) for line in log_lines(server, "cleanup: removed")} == {leader}

    os.kill(leader, signal.SIGKILL)
    poll(lambda: len(log_lines(server, "runs the cleanup passes")) == 2)
    successor = pid_of(log_lines(server, "runs the cleanup passes")[1])
    assert successor != leader and successor in workers_of(server)
    third = stale("stale3")
    poll(lambda: not third.exists())


def test_a_storage_fault_stops_start_up_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "files").write_text("a file where the storage folder should be")
    result = subprocess.run([sys.executable, "-m", "uploadsrv", "--config", str(write_config(tmp_path, {})),
                             "--port", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    # One line from the supervisor, not one per worker.
    assert [line for line in lines if "cannot start" in line] == [lines[-1]]
    assert lines[-1].startswith("uploadsrv: cannot start:")
    assert "Traceback" not in result.stderr
