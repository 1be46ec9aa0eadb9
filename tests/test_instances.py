"""Several uploadsrv instances behind one address: two real `python -m uploadsrv`
processes on their own ports, each with its own storage.tmp_dir (spool) and S3 gateway
of one distributed SeaweedFS (`seaweed_cluster`), sharing one bucket and prefix and one
Redis for the upload locks (lease 3 s, stale after 1 s). AWS credentials reach them
through their environment, as an operator would set them.

What it shows: a tus upload whose PATCHes alternate between the instances; the kill -9
of the instance holding a PATCH, then the client resuming on the other one at the
acknowledged offset; one-shot uploads through both; the same listing, with cursors, from
either; and the shipped contrib/nginx/uploadsrv-instances.conf in front of both.
Skips with the reason where SeaweedFS, redis-server (or nginx) cannot run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from redis_server import RedisServer, start_redis
from seaweed import Cluster, seaweed_cluster  # noqa: F401 - a session fixture
from support import ServerProcess, free_port, poll, request_head, start_process, wait_serving

from uploadsrv.config import load_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED_NGINX = REPO / "contrib" / "nginx" / "uploadsrv-instances.conf"
SHIPPED_CONFIG = REPO / "contrib" / "s3" / "config.toml"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

MiB = 1 << 20
LEASE = 3.0
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {"Content-Type": "application/offset+octet-stream"}


def instance_config(cluster: Cluster, endpoint: str, prefix: str, redis_url: str) -> str:
    """One instance's config.toml: its own tmp_dir (relative: its own folder), the shared
    bucket, prefix and Redis, S3 parts of the minimum size so a few MiB make several."""
    return f"""
[server]
host = "127.0.0.1"
trust_forwarded = true
[storage]
backend = "s3"
dir = "files"
tmp_dir = "tmp"
min_free_space = 0
[storage.s3]
endpoint = "{endpoint}"
region = "{cluster.region}"
bucket = "{cluster.bucket}"
prefix = "{prefix}"
part_size = "5MiB"
spool_budget = "20MiB"
[limits]
stale_after = "1s"
[locks]
backend = "redis"
redis_url = "{redis_url}"
lease = "{LEASE:g}s"
"""


@dataclass
class Instances:
    """Two uploadsrv processes on one bucket/prefix and one Redis; `folders[i]` holds
    instance i's config.toml, server.log and tmp/ (its spool)."""

    cluster: Cluster
    folders: list[Path]
    redis: RedisServer
    servers: list[ServerProcess] = field(default_factory=list)

    def start(self, index: int, port: int | None = None) -> ServerProcess:
        with pytest.MonkeyPatch.context() as patch:
            # Popen copies the environment at start: the credentials reach the process
            # the way an operator sets them, and are gone from this one right after.
            patch.setenv("AWS_ACCESS_KEY_ID", self.cluster.access_key)
            patch.setenv("AWS_SECRET_ACCESS_KEY", self.cluster.secret_key)
            for attempt in range(3):
                try:
                    server = start_process(self.folders[index] / "config.toml", self.folders[index], port=port)
                    break
                except AssertionError as failure:
                    # A free port picked for it may be taken (by any process's outgoing
                    # connection) before it binds; only that is worth another try.
                    if "address already in use" not in str(failure) or attempt == 2:
                        raise
        if index < len(self.servers):
            self.servers[index] = server
        else:
            self.servers.append(server)
        return server

    def revive(self) -> None:
        """Start again (on the same port) an instance a test killed."""
        for index, server in enumerate(self.servers):
            if server.process.poll() is not None:
                self.start(index, port=server.port)

    def stop(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
                try:
                    server.process.wait(15)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()

    def lock_keys(self) -> list[str]:
        with redis.Redis.from_url(self.redis.url, decode_responses=True) as client:
            return sorted(client.keys("uploadsrv:*:lock"))


@pytest.fixture(scope="module")
def instances(seaweed_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    redis_server = start_redis(tmp_path_factory.mktemp("instances-redis"))
    prefix = seaweed_cluster.new_prefix()
    folders = []
    # One gateway each, where the cluster has two: nothing is shared but bucket and Redis.
    for number in range(2):
        folder = tmp_path_factory.mktemp(f"instance-{'ab'[number]}")
        endpoint = seaweed_cluster.endpoints[number % len(seaweed_cluster.endpoints)]
        (folder / "config.toml").write_text(instance_config(seaweed_cluster, endpoint, prefix, redis_server.url))
        folders.append(folder)
    pair = Instances(seaweed_cluster, folders, redis_server)
    try:
        pair.start(0)
        pair.start(1)
        yield pair
    finally:
        pair.stop()
        redis_server.stop()


@pytest.fixture
def pair(instances: Instances) -> Iterator[Instances]:
    """Both instances up (one killed by an earlier test is started again)."""
    instances.revive()
    yield instances
    # Every request let go of its lease (a killed holder's ran out).
    poll(lambda: instances.lock_keys() == [], timeout=LEASE + 5)


def media(mp3: bytes, size: int) -> bytes:
    """A real mp3 start, then random bytes up to `size`."""
    return mp3 + os.urandom(size - len(mp3))


def metadata(filename: str) -> str:
    return "filename " + base64.b64encode(filename.encode()).decode()


async def create(session: aiohttp.ClientSession, server: ServerProcess, length: int, filename: str) -> str:
    async with session.post(f"{server.url}/files", headers={
            **TUS, "Upload-Length": str(length), "Upload-Metadata": metadata(filename)}) as response:
        assert response.status == 201, await response.text()
        return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


async def patch(session: aiohttp.ClientSession, server: ServerProcess, path: str, offset: int, chunk: bytes) -> int:
    async with session.patch(server.url + path, data=io.BytesIO(chunk), headers={
            **TUS, **OFFSET_STREAM, "Upload-Offset": str(offset)}) as response:
        assert response.status == 204, await response.text()
        return int(response.headers["Upload-Offset"])


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def one_shot(session: aiohttp.ClientSession, server: ServerProcess, data: bytes, filename: str) -> Any:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=filename, content_type="application/octet-stream")
    async with session.post(f"{server.url}/upload", data=form) as response:
        assert response.status == 201, await response.text()
        return await response.json()


# -- tus across instances ---------------------------------------------------------------------

async def test_a_tus_upload_whose_patches_alternate_between_instances_ends_whole_and_the_same_on_both(
        pair: Instances, mp3: bytes) -> None:
    a, b = pair.servers
    # Pieces under and over the 5 MiB part: tails left by one instance are joined by the other.
    pieces = [3 * MiB, 7 * MiB, 2 * MiB, 1 * MiB, 6 * MiB, 3 * MiB + 12345]
    data = media(mp3, sum(pieces))
    async with aiohttp.ClientSession() as session:
        path = await create(session, a, len(data), "alternate.mp3")
        offset = 0
        for number, size in enumerate(pieces):
            # Each PATCH on the other instance; the offset comes back from the shared bucket.
            server = pair.servers[(number + 1) % 2]
            async with session.head(server.url + path, headers=TUS) as response:
                assert response.status == 200 and int(response.headers["Upload-Offset"]) == offset
            offset = await patch(session, server, path, offset, data[offset:offset + size])
        assert offset == len(data)
        records = [await get_json(session, f"{server.url}{path}/info") for server in (a, b)]
        async with session.get(b.url + path, headers={"Range": f"bytes={5 * MiB - 10}-{5 * MiB + 9}"}) as response:
            assert response.status == 206 and await response.read() == data[5 * MiB - 10:5 * MiB + 10]
    assert records[0] == records[1]
    assert records[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (records[0]["size"], records[0]["type"], records[0]["filename"]) == (len(data), "mp3", "alternate.mp3")


async def test_after_a_kill_9_of_the_instance_holding_a_patch_the_client_resumes_on_the_other(
        pair: Instances, mp3: bytes) -> None:
    a, b = pair.servers
    data = media(mp3, 20 * MiB)
    acknowledged = 6 * MiB
    async with aiohttp.ClientSession() as session:
        path = await create(session, b, len(data), "killed.mp3")
        assert await patch(session, b, path, 0, data[:acknowledged]) == acknowledged

        # A PATCH for the rest streams into A; A has read megabytes of it (some sent on
        # to S3 as parts) when it is killed, before it could answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        sent = acknowledged + 9 * MiB
        writer.write(request_head("PATCH", path, {
            **TUS, **OFFSET_STREAM, "Upload-Offset": str(acknowledged),
            "Content-Length": str(len(data) - acknowledged)}) + data[acknowledged:sent])
        await asyncio.wait_for(writer.drain(), 20)
        await asyncio.to_thread(poll, lambda: pair.lock_keys() != [])
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        killed = time.monotonic()
        writer.close()

        # As tus clients do: ask for the offset, retrying while the dead holder's lease
        # is still there (423), then resume where the server says.
        statuses = []
        while True:
            async with session.head(b.url + path, headers=TUS) as response:
                statuses.append(response.status)
                if response.status != 423:
                    offset = int(response.headers["Upload-Offset"])
                    break
            assert time.monotonic() - killed < LEASE + 5, f"still locked after the lease: {statuses}"
            await asyncio.sleep(0.2)
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {423}
        assert acknowledged <= offset <= sent
        assert await patch(session, b, path, offset, data[offset:]) == len(data)
        record = await get_json(session, f"{b.url}{path}/info")
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["size"] == len(data)


# -- one-shot uploads and listing -------------------------------------------------------------

async def test_one_shot_uploads_through_either_instance_are_served_by_both(pair: Instances, mp3: bytes) -> None:
    a, b = pair.servers
    first, second = media(mp3, 6 * MiB + 1), media(mp3, 2 * MiB)
    async with aiohttp.ClientSession() as session:
        records = [await one_shot(session, a, first, "first.mp3"), await one_shot(session, b, second, "second.mp3")]
        for record, data in zip(records, (first, second)):
            assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
            for server in (a, b):
                assert await get_json(session, f"{server.url}/files/{record['id']}/info") == record
                async with session.get(f"{server.url}/files/{record['id']}") as response:
                    assert response.status == 200 and await response.read() == data
        # Deleted through one, gone from both.
        async with session.delete(f"{b.url}/files/{records[0]['id']}") as response:
            assert response.status == 204
        for server in (a, b):
            async with session.get(f"{server.url}/files/{records[0]['id']}/info") as response:
                assert response.status == 404


async def test_every_instance_lists_the_same_files_newest_first_and_takes_the_others_cursors(
        pair: Instances, mp3: bytes) -> None:
    a, b = pair.servers
    async with aiohttp.ClientSession() as session:
        made = [(await one_shot(session, pair.servers[number % 2], media(mp3, 64 << 10), f"{number}.mp3"))["id"]
                for number in range(3)]
        listings = [(await get_json(session, f"{server.url}/files?limit=1000"))["files"] for server in (a, b)]
        assert listings[0] == listings[1]
        assert [record["id"] for record in listings[0][:3]] == made[::-1]
        # Pages of 2, each fetched from the other instance with the last one's cursor.
        paged: list[Any] = []
        url = f"{a.url}/files?limit=2"
        for number in range(100):
            page = await get_json(session, url)
            paged += page["files"]
            if not page["next_cursor"]:
                break
            url = f"{pair.servers[(number + 1) % 2].url}/files?limit=2&cursor={page['next_cursor']}"
    assert paged == listings[0]


def test_the_shipped_s3_example_config_loads_as_an_s3_instance_with_redis_locks() -> None:
    config = load_config(SHIPPED_CONFIG)
    assert (config.storage.backend, config.locks.backend) == ("s3", "redis")
    assert config.storage.s3.bucket and config.storage.s3.prefix
    assert config.server.trust_forwarded  # behind the nginx of uploadsrv-instances.conf


# -- behind nginx -----------------------------------------------------------------------------

def nginx_site(nginx_port: int, upstream_ports: list[int]) -> str:
    """The shipped file with the test's ports in place of 80, 8080 and 8081."""
    text = SHIPPED_NGINX.read_text()
    replacements = {"    listen 80;\n": f"    listen 127.0.0.1:{nginx_port};\n"}
    for shipped, port in zip((8080, 8081), upstream_ports):
        replacements[f"    server 127.0.0.1:{shipped} "] = f"    server 127.0.0.1:{port} "
    for shipped, replacement in replacements.items():
        assert text.count(shipped) == 1, f"{SHIPPED_NGINX} no longer has {shipped.strip()!r}"
        text = text.replace(shipped, replacement)
    return text


def start_nginx(folder: Path, upstream_ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    """nginx in one process, everything it writes in `folder`; its access log names the
    instance that served each request."""
    assert NGINX is not None
    port = free_port()
    (folder / "site.conf").write_text(nginx_site(port, upstream_ports))
    temp_paths = "".join(f"    {kind}_temp_path {folder / (kind + '_temp')};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\n"
        f"    log_format upstream '$request_method $uri $status $upstream_addr';\n"
        f"    access_log {folder / 'access.log'} upstream;\n{temp_paths}    include {folder / 'site.conf'};\n}}\n")
    with open(folder / "nginx.out", "wb") as out:
        process = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                    "-e", str(folder / "error.log")], stdout=out, stderr=subprocess.STDOUT)

    wait_serving(process, f"http://127.0.0.1:{port}/health", lambda: (folder / "error.log").read_text())
    return process, port


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx)")
async def test_a_tus_upload_through_nginx_spreads_its_patches_over_both_instances(
        pair: Instances, tmp_path: Path, mp3: bytes) -> None:
    nginx, port = start_nginx(tmp_path, [server.port for server in pair.servers])
    proxy = f"http://127.0.0.1:{port}"
    data = media(mp3, 13 * MiB + 777)
    piece = 2 * MiB
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{proxy}/files", headers={
                    **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": metadata("proxied.mp3")}) as response:
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
            assert location.startswith(f"{proxy}/files/")  # resumed through nginx, never an instance
            offset = 0
            while offset < len(data):
                async with session.patch(location, data=io.BytesIO(data[offset:offset + piece]), headers={
                        **TUS, **OFFSET_STREAM, "Upload-Offset": str(offset)}) as response:
                    assert response.status == 204, await response.text()
                    offset = int(response.headers["Upload-Offset"])
            record = await get_json(session, f"{location}/info")
    finally:
        nginx.send_signal(signal.SIGTERM)
        nginx.wait(15)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    served = {line.split()[3] for line in (tmp_path / "access.log").read_text().splitlines()
              if line.startswith("PATCH ") and line.split()[2] == "204"}
    assert served == {f"127.0.0.1:{server.port}" for server in pair.servers}
    assert [str(path) for path in (tmp_path / "client_body_temp").rglob("*") if path.is_file()] == []
