"""Upload locks shared by several instances: a Redis lease per upload.

The file locks (`locks.py`) hold across the processes of one machine; instances on
several machines share a Redis instead. Same interface, same stale-holder takeover:

- The lease is the hash `uploadsrv:{<id>}:lock` = {token, seen}, created only when
  absent, with an expiry of `lease`. Its holder's heartbeat renews it; a dead instance
  stops renewing, so its leases free themselves. Only the holder (its random token)
  renews or deletes a lease: Lua scripts compare the token, so an instance that was
  paused past its lease cannot delete or renew the lease another one took since.
- `seen` is the time of the holder's last received bytes on the Redis clock (set at
  acquire and at each heartbeat that followed bytes): one clock for every instance, so
  a machine with a skewed clock cannot make a live holder look silent.
- A newcomer that finds a lease waits BRIEF_HOLD, then answers 423 at once when the
  holder was seen within two heartbeats; a silent holder is waited on until it is stale
  (`stale_after`) and asked to stop: the key `uploadsrv:{<id>}:release` names its token.
  The holder reads that key at its next heartbeat and, if still silent, its
  `on_release_request` callback stops the request (which keeps its bytes and releases).
- A lease found gone at a heartbeat (Redis restarted without persistence, or a Redis
  outage longer than the lease) is taken back when nobody else took it; taken by
  another, the holder logs it and calls `on_release_request` (nothing can fence a
  writer that keeps writing: the lease must outlast any pause of an instance).

The `{<id>}` hash tag keeps both keys of an upload in one Redis Cluster slot. This module
must not touch storage or HTTP: it raises UploadLocked (423) and LocksUnavailable (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from ..errors import LocksUnavailable, UploadLocked
from ..ids import check_id
from .locks import BRIEF_HOLD, POLL_INTERVAL, TAKEOVER_WAIT

log = logging.getLogger(__name__)

KEY_PREFIX = "uploadsrv"
# A request waiting on a lock must not hang on a Redis that stopped answering.
REDIS_TIMEOUT = 5.0

_NOW = "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
# KEYS: lock, release. ARGV: token, lease ms. 1 = taken.
_ACQUIRE = _NOW + """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('hset', KEYS[1], 'token', ARGV[1], 'seen', now)
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('del', KEYS[2])
return 1"""
# KEYS: lock, release. ARGV: token, lease ms, "1" after bytes arrived.
_BEAT = _NOW + """
local token = redis.call('hget', KEYS[1], 'token')
if not token then
  redis.call('hset', KEYS[1], 'token', ARGV[1], 'seen', now)
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 2
end
if token ~= ARGV[1] then return -1 end
redis.call('pexpire', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('hset', KEYS[1], 'seen', now) end
if redis.call('get', KEYS[2]) == ARGV[1] then return 1 end
return 0"""
_HELD, _ASKED, _TAKEN_BACK, _LOST = 0, 1, 2, -1
# KEYS: lock, (release). ARGV: token. 1 = deleted.
_RELEASE = """
if redis.call('hget', KEYS[1], 'token') == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""
# KEYS: lock, (release). {token, ms since seen}, or nil when free.
_HOLDER = _NOW + """
local holder = redis.call('hmget', KEYS[1], 'token', 'seen')
if not holder[1] then return nil end
return {holder[1], now - tonumber(holder[2] or 0)}"""
# KEYS: lock, release. ARGV: token of the holder asked, ms the request lives.
_ASK = """
if redis.call('hget', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1"""


class RedisUploadLock:
    """A held lease. `mark_active()` as bytes arrive; `release()` exactly once."""

    def __init__(self, locks: RedisUploadLocks, upload_id: str, token: str) -> None:
        self.upload_id = upload_id
        self.token = token
        self._locks = locks
        self._active = False
        self._held = True
        self._stopping = asyncio.Event()
        # Called (on the loop) when a newcomer asks a silent holder to stop, or the lease was lost.
        self.on_release_request: Callable[[], None] | None = None
        self._heartbeat = asyncio.create_task(self._beat(), name=f"uploadsrv-redis-lock-{upload_id}")

    def mark_active(self) -> None:
        self._active = True

    async def _beat(self) -> None:
        locks = self._locks
        renewed = time.monotonic()
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(locks.heartbeat):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return  # release() lets go once no renewal is in flight
            active, self._active = self._active, False
            try:
                state = await locks._run(locks._beat_script, self.upload_id, self.token, locks._lease_ms, int(active))
            except (RedisError, OSError) as error:
                if not failing:
                    log.warning("lock %s: cannot renew its lease (%s); retrying", self.upload_id, error)
                    failing = True
                if time.monotonic() - renewed >= locks.lease:
                    self._lost("its lease ran out while Redis was unreachable")
                    renewed = float("inf")  # said once; a later renewal takes it back or finds it lost
                continue
            if failing:
                log.info("lock %s: lease renewed again", self.upload_id)
            failing, renewed = False, time.monotonic()
            if state == _TAKEN_BACK:
                log.warning("lock %s: its lease had expired (Redis restarted?); taken back", self.upload_id)
            elif state == _LOST:
                self._lost("another request holds it now")
                return
            elif state == _ASKED and not active and self.on_release_request is not None:
                self.on_release_request()

    def _lost(self, why: str) -> None:
        log.error("lock %s: lease lost, %s; stopping this request if it is silent", self.upload_id, why)
        if self.on_release_request is not None:
            self.on_release_request()

    async def release(self) -> None:
        """Let go (idempotent); safe to call from a request that is being cancelled."""
        if not self._held:
            return
        self._held = False
        self._stopping.set()
        # Shielded: a cancelled request must still give the lease back.
        await asyncio.shield(self._let_go())

    async def _let_go(self) -> None:
        # After the heartbeat's last renewal, or it could take the lease back once deleted.
        await asyncio.gather(self._heartbeat, return_exceptions=True)
        self._locks._holding.discard(self)
        try:
            await self._locks._run(self._locks._release_script, self.upload_id, self.token)
        except (RedisError, OSError) as error:
            log.warning("lock %s: cannot release its lease (%s); it expires in %g s",
                        self.upload_id, error, self._locks.lease)


class RedisUploadLocks:
    """Leases in one Redis; hands out `RedisUploadLock`s. One per instance (process)."""

    def __init__(self, url: str, *, stale_after: float, lease: float) -> None:
        self.stale_after = stale_after
        self.lease = lease
        self.heartbeat = min(1.0, stale_after / 3, lease / 3)
        self._lease_ms = max(1, round(lease * 1000))
        self._where = _without_credentials(url)
        self._redis: Redis = Redis.from_url(
            url, decode_responses=True, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            client_name=f"uploadsrv-{socket.gethostname()}-{os.getpid()}")
        script = self._redis.register_script
        self._acquire_script, self._beat_script, self._release_script = script(_ACQUIRE), script(_BEAT), script(_RELEASE)
        self._holder_script, self._ask_script = script(_HOLDER), script(_ASK)
        self._holding: set[RedisUploadLock] = set()  # released by aclose() if a request did not

    @staticmethod
    def keys(upload_id: str) -> list[str]:
        """The lease key and the release-request key of an upload."""
        tag = f"{KEY_PREFIX}:{{{check_id(upload_id)}}}"
        return [f"{tag}:lock", f"{tag}:release"]

    async def _run(self, script: Callable[..., Awaitable[object]], upload_id: str, *args: object) -> object:
        return await script(keys=self.keys(upload_id), args=list(args))

    def prepare(self) -> None:
        """Nothing to make: Redis is reached on first use (see `check`)."""

    async def check(self) -> None:
        """Warn at start-up when Redis cannot be reached (requests get 503 until it can)."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as error:
            log.warning("locks: Redis at %s cannot be reached (%s); uploads get 503 until it can",
                        self._where, error)

    async def aclose(self) -> None:
        for lock in list(self._holding):
            await lock.release()
        await self._redis.aclose()

    async def try_acquire(self, upload_id: str) -> RedisUploadLock | None:
        """The lease if nobody holds it, else None (never waits)."""
        token = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(8)}"
        if not await self._call(self._acquire_script, upload_id, token, self._lease_ms):
            return None
        lock = RedisUploadLock(self, upload_id, token)
        self._holding.add(lock)
        return lock

    async def acquire(self, upload_id: str) -> RedisUploadLock:
        """The lease for a request. A live holder (seen within two heartbeats) means 423
        at once; a silent one is waited on until it is stale, then asked to stop."""
        deadline = time.monotonic() + BRIEF_HOLD
        while (lock := await self.try_acquire(upload_id)) is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
        if lock is not None:
            return lock
        _, silence = await self._holder_silence(upload_id)
        if silence >= 2 * self.heartbeat:
            deadline = time.monotonic() + max(0.0, self.stale_after - silence) + TAKEOVER_WAIT
            asked = ""
            while time.monotonic() < deadline:
                holder, silence = await self._holder_silence(upload_id)
                if holder and holder != asked and silence >= self.stale_after:
                    ttl = round((self.stale_after + TAKEOVER_WAIT) * 1000)
                    await self._call(self._ask_script, upload_id, holder, ttl)
                    asked = holder
                await asyncio.sleep(POLL_INTERVAL)
                lock = await self.try_acquire(upload_id)
                if lock is not None:
                    return lock
                if (await self._holder_silence(upload_id))[1] < 2 * self.heartbeat:
                    break  # the holder came back to life
        raise UploadLocked(
            f"upload {upload_id} is being written by another request; retry in a few seconds",
            headers={"Retry-After": "1"},
        )

    async def remove_abandoned(self, older_than: float) -> None:
        """Nothing to do: every key expires by itself (a lease after `lease` unless renewed,
        a release request once its newcomer stopped waiting), so a crash leaves nothing."""

    async def _holder_silence(self, upload_id: str) -> tuple[str, float]:
        """The holder's token and seconds since it was seen (("", inf) when free)."""
        holder = await self._call(self._holder_script, upload_id)
        if not isinstance(holder, list):
            return "", float("inf")
        return str(holder[0]), max(0.0, int(holder[1]) / 1000)

    async def _call(self, script: Callable[..., Awaitable[object]], upload_id: str, *args: object) -> object:
        try:
            return await self._run(script, upload_id, *args)
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from error

    def _unavailable(self, error: Exception) -> LocksUnavailable:
        log.warning("locks: Redis at %s failed: %s", self._where, error)
        return LocksUnavailable("the upload lock service is unreachable; retry in a few seconds",
                                headers={"Retry-After": "5"})


def _without_credentials(url: str) -> str:
    """The URL for logs: a password in it must never reach them."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
