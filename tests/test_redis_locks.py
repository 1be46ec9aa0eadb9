"""Upload locks in Redis (`locks.backend = "redis"`), against a real redis-server.

Each `RedisUploadLocks` object plays one instance (its own connections): the lease, its
renewal, the release only by its owner, the 423 for a live holder, the takeover of a
silent one through a release request, a killed or paused instance (a real subprocess
holding a lease), and the tus locking scenario through the real app.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, redis_server  # noqa: F401 (a fixture)
from support import Running, apoll, make_config, poll, read_until_close, request_head, start_process, status_of

from uploadsrv.app import create_app
from uploadsrv.config import ConfigError
from uploadsrv.errors import LocksUnavailable, NotFound, UploadLocked
from uploadsrv.uploads.locks import UploadLocks
from uploadsrv.uploads.lock_store import locks_from_config
from uploadsrv.uploads.redis_locks import RedisUploadLocks

REPO = Path(__file__).resolve().parent.parent
TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD = "upload-1"


@pytest.fixture
async def instances(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisUploadLocks]]:
    """Makes `RedisUploadLocks` (one per simulated instance), all closed at the end."""
    made: list[RedisUploadLocks] = []

    def make(stale_after: float = 0.6, lease: float = 2.0) -> RedisUploadLocks:
        made.append(RedisUploadLocks(redis_server.url, stale_after=stale_after, lease=lease))
        return made[-1]

    yield make
    for locks in made:
        await locks.aclose()


def keys(server: RedisServer) -> list[str]:
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        return sorted(client.keys("uploadsrv:*"))


def holder_token(server: RedisServer, upload_id: str = UPLOAD) -> str | None:
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        return client.hget(RedisUploadLocks.keys(upload_id)[0], "token")


async def acquire_retrying(locks: RedisUploadLocks, within: float = 8.0) -> Any:
    """`acquire` retried on 423, as tus clients do (a fresh holder counts as live)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await locks.acquire(UPLOAD)
        except UploadLocked:
            assert time.monotonic() < deadline, "never got the lock"
            await asyncio.sleep(0.1)


# -- the lease -------------------------------------------------------------------------------

async def test_a_lease_is_held_by_one_instance_and_free_once_released(instances, redis_server) -> None:
    first, second = instances(), instances()
    lock = await first.try_acquire(UPLOAD)
    assert lock is not None
    assert await second.try_acquire(UPLOAD) is None
    assert await first.try_acquire(UPLOAD) is None  # one holder, even within an instance
    with redis.Redis.from_url(redis_server.url) as client:
        assert 0 < client.pttl(RedisUploadLocks.keys(UPLOAD)[0]) <= 2000  # the lease expires by itself
    await lock.release()
    await lock.release()  # idempotent
    assert keys(redis_server) == []
    again = await second.try_acquire(UPLOAD)
    assert again is not None
    await again.release()
    with pytest.raises(NotFound):
        await first.try_acquire("../escape")


async def test_a_silent_holder_keeps_its_lease_past_the_lease_time_by_renewing_it(
        instances, redis_server, caplog: pytest.LogCaptureFixture) -> None:
    holder, other = instances(stale_after=10, lease=0.6), instances()
    lock = await holder.try_acquire(UPLOAD)
    assert lock is not None
    end = time.monotonic() + 4 * 0.6
    with redis.Redis.from_url(redis_server.url) as client:
        while time.monotonic() < end:
            assert await other.try_acquire(UPLOAD) is None
            assert client.pttl(RedisUploadLocks.keys(UPLOAD)[0]) > 0  # renewed before it ran out
            await asyncio.sleep(0.05)
    assert "taken back" not in caplog.text  # never lost, so never retaken
    await lock.release()
    assert await other.try_acquire(UPLOAD) is not None


async def test_a_second_instance_gets_423_at_once_while_the_holder_receives_bytes(instances, redis_server) -> None:
    holder, newcomer = instances(), instances()
    lock = await holder.acquire(UPLOAD)
    asked: list[bool] = []
    lock.on_release_request = lambda: asked.append(True)

    async def stream() -> None:
        while True:
            lock.mark_active()
            await asyncio.sleep(0.05)

    streaming = asyncio.create_task(stream())
    renewals: set[str] = set()

    def renewed_thrice() -> bool:  # `seen` moved on at three heartbeats: live by its bytes alone
        with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
            renewals.add(client.hget(RedisUploadLocks.keys(UPLOAD)[0], "seen") or "")
        return len(renewals) > 3

    try:
        await apoll(renewed_thrice, timeout=5)
        started = time.monotonic()
        with pytest.raises(UploadLocked) as refused:
            await newcomer.acquire(UPLOAD)
        assert time.monotonic() - started < 1.0
        assert refused.value.status == 423 and refused.value.headers["Retry-After"] == "1"
        assert asked == []  # a live holder is never asked to stop
    finally:
        streaming.cancel()
        await lock.release()


async def test_a_silent_holder_on_another_instance_is_asked_to_stop_and_the_newcomer_takes_over(
        instances, redis_server) -> None:
    holder, newcomer = instances(), instances()
    lock = await holder.acquire(UPLOAD)
    stopping: list[asyncio.Task[None]] = []
    # What a tus PATCH does when asked: stop its silent read, keep its bytes, release.
    lock.on_release_request = lambda: stopping.append(asyncio.create_task(lock.release()))
    started = time.monotonic()
    taken = await acquire_retrying(newcomer)
    waited = time.monotonic() - started
    assert len(stopping) == 1
    assert 0.6 <= waited < 2.0  # until it was stale, not until the 2 s lease ran out
    assert holder_token(redis_server) == taken.token
    await taken.release()
    assert keys(redis_server) == []  # the release request went with the new holder's acquire


async def test_an_unreachable_redis_gets_503_and_its_password_stays_out_of_the_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        locks = RedisUploadLocks(f"redis://:s3cret-pw@127.0.0.1:{port}/0", stale_after=1, lease=2)
        caplog.set_level(logging.WARNING)
        started = time.monotonic()
        with pytest.raises(LocksUnavailable) as refused:
            await locks.acquire(UPLOAD)
        await locks.check()
        await locks.aclose()
    assert time.monotonic() - started < 5
    assert refused.value.status == 503 and refused.value.code == "locks_unavailable"
    assert "127.0.0.1" in caplog.text and "s3cret-pw" not in caplog.text


async def test_a_lease_lost_with_redis_data_is_taken_back_by_its_holder(instances, redis_server) -> None:
    holder, other = instances(), instances()
    lock = await holder.try_acquire(UPLOAD)
    assert lock is not None
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()  # Redis restarted without persistence
    await apoll(lambda: holder_token(redis_server) == lock.token, timeout=3)
    assert await other.try_acquire(UPLOAD) is None
    await lock.release()


async def test_remove_abandoned_leaves_held_leases_alone(instances, redis_server) -> None:
    locks = instances()
    lock = await locks.try_acquire(UPLOAD)
    assert lock is not None
    await locks.remove_abandoned(0)
    assert holder_token(redis_server) == lock.token
    await lock.release()
    await locks.remove_abandoned(0)
    assert keys(redis_server) == []


# -- an instance that dies or pauses: a real process holding a lease ---------------------------

HOLDER = """
import asyncio, sys
from uploadsrv.uploads.redis_locks import RedisUploadLocks

async def main(url, upload_id, stale_after, lease):
    locks = RedisUploadLocks(url, stale_after=float(stale_after), lease=float(lease))
    lock = await locks.acquire(upload_id)
    lock.on_release_request = lambda: print("asked", flush=True)
    print("held", lock.token, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await lock.release()
    print("released", flush=True)
    await locks.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


async def start_holder(server: RedisServer, lease: float) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, server.url, UPLOAD, "0.6", str(lease), cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().split()
    assert line[0] == "held"
    return process, line[1]


async def next_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()


async def test_a_killed_instance_lease_expires_and_another_instance_takes_over(instances, redis_server) -> None:
    process, token = await start_holder(redis_server, lease=1.5)
    process.kill()  # SIGKILL: no release, no more renewals
    await process.wait()
    killed = time.monotonic()
    assert holder_token(redis_server) == token  # still held: only the lease frees it
    lock = await acquire_retrying(instances())
    assert time.monotonic() - killed < 1.5 + 1.0
    await lock.release()
    assert keys(redis_server) == []  # nothing of the dead instance is left


async def test_an_instance_paused_past_its_lease_can_neither_release_nor_renew_the_new_owners_lease(
        instances, redis_server) -> None:
    process, token = await start_holder(redis_server, lease=1.0)
    assert process.stdin is not None
    try:
        os.kill(process.pid, signal.SIGSTOP)  # a frozen VM, a long GC pause
        newcomer = instances(lease=1.0)
        lock = await acquire_retrying(newcomer)  # once the paused holder's lease ran out
        os.kill(process.pid, signal.SIGCONT)
        assert await next_line(process) == "asked"  # its heartbeat found the lease taken
        process.stdin.write(b"release\n")
        assert await next_line(process) == "released"
        assert holder_token(redis_server) == lock.token != token
        assert await instances().try_acquire(UPLOAD) is None
        await lock.release()
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        await process.wait()


# -- configuration --------------------------------------------------------------------------------

def test_the_locks_section_chooses_the_backend(tmp_path: Path) -> None:
    assert isinstance(locks_from_config(make_config(tmp_path)), UploadLocks)
    config = make_config(tmp_path, locks={"backend": "redis", "redis_url": "redis://10.0.0.5:6380/2",
                                          "lease": "10s"})
    assert (config.locks.backend, config.locks.lease) == ("redis", 10.0)
    assert isinstance(locks_from_config(config), RedisUploadLocks)
    for key, value in (("backend", "etcd"), ("redis_url", "http://x"), ("lease", "0s")):
        with pytest.raises(ConfigError, match=f"locks.{key}"):
            make_config(tmp_path, locks={key: value})


def test_the_shipped_config_holds_the_locks_defaults(tmp_path: Path) -> None:
    from uploadsrv.config import load_config
    assert load_config(REPO / "config.toml").locks == load_config(None, cwd=tmp_path).locks


# -- the tus locking scenario through the real app ------------------------------------------------

@pytest.fixture
def start_redis_app(redis_server: RedisServer, aiohttp_client: Any, tmp_path: Path
                    ) -> Callable[..., Awaitable[Running]]:
    """A real app on loopback with `locks.backend = "redis"`; several share one storage
    folder and one Redis, as instances behind a load balancer would."""

    async def factory(**limits: Any) -> Running:
        config = make_config(tmp_path, limits={"stale_after": "1s", **limits},
                             locks={"backend": "redis", "redis_url": redis_server.url, "lease": "5s"})
        app = create_app(config)
        return Running(await aiohttp_client(app), config)

    return factory


async def create_upload(server: Running, length: int) -> str:
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": str(length)})
    assert response.status == 201, await response.text()
    return "/files/" + response.headers["Location"].rsplit("/", 1)[1]


async def open_patch(server: Running, path: str, length: int, first: bytes) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_head("PATCH", path, {
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(length), "Connection": "close"}) + first)
    await writer.drain()
    return reader, writer


async def test_through_the_app_a_second_writer_gets_423_while_the_first_streams(
        start_redis_app, redis_server, mp3: bytes) -> None:
    server = await start_redis_app()
    data = mp3 + os.urandom(1 << 20)
    path = await create_upload(server, len(data))
    reader, writer = await open_patch(server, path, len(data), data[:200_000])
    await apoll(lambda: keys(redis_server) != [])
    second = await server.client.patch(path, data=b"x", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert second.status == 423
    assert (await second.json())["error"]["code"] == "upload_locked"
    writer.write(data[200_000:])
    raw = await read_until_close(reader, 5)
    writer.close()
    assert status_of(raw) == 204
    info = await (await server.client.get(path + "/info")).json()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    await apoll(lambda: keys(redis_server) == [])
    assert server.temp() == []  # no lock file either


async def test_a_silent_patch_on_one_instance_is_taken_over_from_another(
        start_redis_app, redis_server, mp3: bytes) -> None:
    first, second = await start_redis_app(), await start_redis_app()
    data = mp3 + os.urandom(2 << 20)
    path = await create_upload(first, len(data))
    sent = 300_000
    reader, writer = await open_patch(first, path, len(data), data[:sent])
    await apoll(lambda: keys(redis_server) != [])
    started = time.monotonic()
    while (response := await second.client.head(path, headers=TUS)).status == 423:
        assert time.monotonic() - started < 8, "the silent request was never taken over"
        await asyncio.sleep(0.2)
    assert response.status == 200, await response.text()
    assert int(response.headers["Upload-Offset"]) == sent  # every byte that arrived was kept
    rest = await second.client.patch(path, data=io.BytesIO(data[sent:]), headers={
        **TUS, "Upload-Offset": str(sent), "Content-Type": "application/offset+octet-stream"})
    assert rest.status == 204, await rest.text()
    info = await (await first.client.get(path + "/info")).json()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    writer.close()
    await apoll(lambda: keys(redis_server) == [])


async def test_a_request_cut_off_mid_body_releases_its_lease_at_once(
        start_redis_app, redis_server, mp3: bytes) -> None:
    server = await start_redis_app()
    data = mp3 + os.urandom(1 << 20)
    path = await create_upload(server, len(data))
    reader, writer = await open_patch(server, path, len(data), data[:100_000])
    await apoll(lambda: keys(redis_server) != [])
    writer.close()
    await apoll(lambda: keys(redis_server) == [], timeout=3)  # not after the 5 s lease
    response = await server.client.head(path, headers=TUS)
    assert response.status == 200 and int(response.headers["Upload-Offset"]) == 100_000


def test_two_server_processes_with_separate_tmp_folders_share_locks_through_redis(
        tmp_path: Path, redis_server: RedisServer, mp3: bytes) -> None:
    """The real CLI, twice, on one storage folder: the lease is in Redis (no lock file),
    a streaming PATCH on one means 423 on the other, a silent one is taken over."""
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n'
                      f'[limits]\nstale_after = "1s"\n[locks]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n')
    first, second = start_process(config, tmp_path), start_process(config, tmp_path)

    def call(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request(method, path, body=body, headers={**TUS, **headers})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    try:
        data = mp3 + os.urandom(1 << 20)
        created = call(first.port, "POST", "/files", {"Upload-Length": str(len(data))})
        path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
        with socket.create_connection(("127.0.0.1", first.port)) as stream:
            stream.sendall(request_head("PATCH", path, {
                **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(len(data))}) + data[:200_000])
            poll(lambda: keys(redis_server) != [])
            assert not list((tmp_path / "tmp").glob("locks/*.lock"))
            assert call(second.port, "PATCH", path, {"Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream"}, b"x").status == 423
            started = time.monotonic()
            while (answer := call(second.port, "HEAD", path, {})).status == 423:
                assert time.monotonic() - started < 8
            assert answer.status == 200 and int(answer.headers["Upload-Offset"]) == 200_000
    finally:
        for server in (first, second):
            server.process.terminate()
            server.process.wait(10)
