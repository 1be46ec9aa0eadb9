"""SeaweedFS for the tests: the session's engines, their fixtures and S3 backends on them.

`weed mini` (installed, started and stopped by `seaweed_mini`, which the benchmark uses
too) runs master, volume server, filer and S3 gateway in one process. The `seaweed` fixture starts one per test session (shared
by every module that imports it, through `config.stash`) and skips, with the reason, where
the binary cannot be installed or started. Tests share its bucket and keep apart by key
prefix.

`start_cluster` is the distributed layout for tests of several uploadsrv instances: a
master, two volume servers, a filer and two S3 gateways (one per instance), each its own
process; `Cluster.stop` stops them gateways first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiobotocore.session import AioSession, get_session

from uploadsrv.storage.s3 import S3Storage
from uploadsrv.storage.s3_bucket import Credentials
from uploadsrv.storage.s3_layout import MIN_PART

import seaweed_mini
from seaweed_mini import Unavailable, free_ports, stop_process, wait_for_bucket, weed_binary

ACCESS_KEY = "uploadsrv-test"
SECRET_KEY = "uploadsrv-test-secret"
BUCKET = "uploadsrv-test"
REGION = seaweed_mini.REGION


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


def start_mini(folder: Path) -> Seaweed:
    """`weed mini` on loopback with data in `folder`; Unavailable if it cannot run."""
    process, endpoint = seaweed_mini.start_mini(folder, bucket=BUCKET, credentials=(ACCESS_KEY, SECRET_KEY))
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
            wait_for_bucket(endpoint, BUCKET, (ACCESS_KEY, SECRET_KEY), processes[f"s3-{number}"],
                            folder / f"s3-{number}.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _create_bucket(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """CreateBucket through a gateway, polling while the cluster comes up (volumes register)."""
    def create(client: Any) -> None:
        try:
            client.create_bucket(Bucket=BUCKET)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    seaweed_mini.retry_until_up(endpoint, (ACCESS_KEY, SECRET_KEY), create, process, log, f"create bucket {BUCKET!r}")


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
