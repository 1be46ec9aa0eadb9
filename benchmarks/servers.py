"""Starting and stopping the servers under test, each on its own loopback port.

Owns the list of servers (four peers from benchmarks/peers/ and uploadsrv started by
its CLI; and uploadsrv on S3, which the S3 case starts), their working folders and
uploadsrv's config.toml (with `server.workers` only when --uploadsrv-workers is given),
starting each under the pinning prefix, waiting until /health answers, and stopping
them. Knows where each server stores a finished upload so the harness can check and
delete it. Does not measure anything.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from environment import BENCH_DIR, UPLOADSRV_BIN, uploadsrv_install_problem
from pinning import Pinning

PEERS_DIR = BENCH_DIR / "peers"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
ALLOWED_TYPES = ["mp3", "wav", "mp4", "m4a", "flac", "ogg", "webm", "mov"]


@dataclass(frozen=True)
class ServerSpec:
    key: str
    label: str
    body: str  # "multipart" (curl -F) or "raw" (curl -T)


AIOHTTP_RAW = ServerSpec("aiohttp_raw", "aiohttp raw", "raw")
AIOHTTP_RAW_FSYNC = ServerSpec("aiohttp_raw_fsync", "aiohttp raw + fsync", "raw")
SEED_PATTERN = ServerSpec("seed_pattern", "seed pattern", "multipart")
FASTAPI_DEFAULT = ServerSpec("fastapi_default", "FastAPI default", "multipart")
UPLOADSRV = ServerSpec("uploadsrv", "uploadsrv", "multipart")
ALL_SERVERS = (AIOHTTP_RAW, AIOHTTP_RAW_FSYNC, SEED_PATTERN, FASTAPI_DEFAULT, UPLOADSRV)
# Started by the S3 case itself (s3_case.py), next to the S3 engine it needs.
UPLOADSRV_S3 = ServerSpec("uploadsrv_s3", "uploadsrv (S3)", "multipart")


@dataclass(frozen=True)
class LaunchOptions:
    """How every server is started: its CPUs, and uploadsrv's worker count if given."""
    pinning: Pinning = Pinning()
    uploadsrv_workers: int | None = None


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    files_dir: Path  # where finished uploads land (cleared between runs)
    scratch_dirs: tuple[Path, ...]  # temp/spool folders (cleared between runs)
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stored_files(self) -> list[Path]:
        """Finished uploads: every regular file except uploadsrv's <id>.json records."""
        return sorted(p for p in self.files_dir.rglob("*") if p.is_file() and p.suffix != ".json")

    def leftovers(self) -> list[Path]:
        """Anything in the temp/spool folders (should be empty once a request ended)."""
        return [p for d in self.scratch_dirs if d.exists() for p in d.rglob("*") if not p.is_dir()]

    def clear(self) -> None:
        # Files only: a server may keep subfolders of its own in these places.
        for folder in (self.files_dir, *self.scratch_dirs):
            if folder.exists():
                for path in list(folder.rglob("*")):
                    if not path.is_dir():
                        path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


class ServerUnavailable(Exception):
    """The server could not be started; the message says why, for the table."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health_ok(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _launch(spec: ServerSpec, argv: list[str], port: int, workdir: Path, files_dir: Path,
            scratch: tuple[Path, ...], env: dict[str, str] | None = None) -> RunningServer:
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=workdir)
    server = RunningServer(spec, process, port, files_dir, scratch, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"exited with status {process.returncode} at start: {_tail(log_path)}")
        if _health_ok(port):
            return server
        time.sleep(0.1)
    server.stop()
    raise ServerUnavailable(f"/health did not answer 200 within {START_TIMEOUT:.0f} s")


def start_peer(spec: ServerSpec, root: Path, options: LaunchOptions) -> RunningServer:
    """Start one of benchmarks/peers/<key>.py with the venv's python."""
    workdir = root / spec.key
    files_dir, spool_dir = workdir / "files", workdir / "spool"
    for folder in (files_dir, spool_dir):
        folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # FastAPI spools uploads to $TMPDIR; point it at a folder we watch and clear.
    env = {**os.environ, "TMPDIR": str(spool_dir)}
    argv = [*options.pinning.server_prefix(), sys.executable,
            str(PEERS_DIR / f"{spec.key}.py"), "--port", str(port), "--dir", str(files_dir)]
    return _launch(spec, argv, port, workdir, files_dir, (spool_dir,), env)


def write_uploadsrv_config(workdir: Path, port: int, max_file_size: str,
                           workers: int | None = None, storage_lines: str = "",
                           extra: str = "") -> Path:
    """`storage_lines` go into [storage], `extra` (tables of its own) at the end."""
    files_dir, tmp_dir = workdir / "files", workdir / "tmp"
    allowed = ", ".join(f'"{name}"' for name in ALLOWED_TYPES)
    config = workdir / "config.toml"
    # server.workers only when asked: an uploadsrv without that key refuses it.
    workers_line = f"workers = {workers}\n" if workers is not None else ""
    config.write_text(
        "[server]\n"
        f'host = "127.0.0.1"\nport = {port}\n{workers_line}\n'
        "[storage]\n"
        f'dir = "{files_dir}"\ntmp_dir = "{tmp_dir}"\nmin_free_space = "1GiB"\n{storage_lines}\n'
        "[limits]\n"
        f'max_file_size = "{max_file_size}"\nmax_concurrent_uploads = 64\n\n'
        "[types]\n"
        f"allowed = [{allowed}]\n"
        f"{extra}"
    )
    return config


def start_uploadsrv(root: Path, options: LaunchOptions, max_file_size: str = "5GiB",
                    name: str = "uploadsrv") -> RunningServer:
    """Start uploadsrv by its CLI with a config of its own; raises ServerUnavailable."""
    problem = uploadsrv_install_problem()
    if problem:
        raise ServerUnavailable(problem)
    workdir = root / name
    files_dir, tmp_dir = workdir / "files", workdir / "tmp"
    for folder in (files_dir, tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_uploadsrv_config(workdir, port, max_file_size, options.uploadsrv_workers)
    argv = [*options.pinning.server_prefix(), str(UPLOADSRV_BIN), "--config", str(config)]
    return _launch(UPLOADSRV, argv, port, workdir, files_dir, (tmp_dir,))


def start_uploadsrv_s3(root: Path, options: LaunchOptions, storage: str,
                       env: dict[str, str]) -> RunningServer:
    """uploadsrv with `storage` (the [storage.s3] table's lines) appended to its config,
    `storage.backend = "s3"`, and `env` (its S3 credentials); its spool lies in tmp/."""
    problem = uploadsrv_install_problem()
    if problem:
        raise ServerUnavailable(problem)
    workdir = root / UPLOADSRV_S3.key
    files_dir, tmp_dir = workdir / "files", workdir / "tmp"
    for folder in (files_dir, tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_uploadsrv_config(workdir, port, "5GiB", options.uploadsrv_workers,
                                    storage_lines='backend = "s3"\n', extra=f"\n[storage.s3]\n{storage}")
    argv = [*options.pinning.server_prefix(), str(UPLOADSRV_BIN), "--config", str(config)]
    return _launch(UPLOADSRV_S3, argv, port, workdir, files_dir, (tmp_dir,), env)


def start(spec: ServerSpec, root: Path, options: LaunchOptions) -> RunningServer:
    if spec is UPLOADSRV:
        return start_uploadsrv(root, options)
    return start_peer(spec, root, options)
