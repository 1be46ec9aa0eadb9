"""The upload lifecycle, one request's hold on one upload, for every protocol:

    create (new id) or resume (existing upload, lock taken, hash state restored)
      -> append(bytes)*  -> flush() to a durable offset  -> finish() -> commit()
      or terminate()
      and always close(): the lock is released; a one-shot upload not committed is removed

The multipart form and the tus handlers drive this; it drives the ingest pipeline,
storage and the upload's lock. It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from ..errors import NotFound
from ..media_types import KNOWN_TYPES, MAX_SNIFF_BYTES, MediaType
from ..storage import FileRecord, Storage, UploadInfo, UploadWriter
from .hashstate import ResumableSha256
from .ingest import Ingest, IngestResult
from .lock_store import Lock, Locks


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(token: str | None) -> str:
    """What an upload keeps of the token that created it: a digest, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32] if token else ""


@dataclass(frozen=True)
class UploadServices:
    """What every session needs; one per app."""

    storage: Storage
    locks: Locks
    hash_executor: Executor
    max_size: int
    allowed: Collection[str]
    expiry: float  # an unfinished upload idle this long is gone
    # Told of every upload started and every file committed (metrics, completion
    # hooks, logs); they never wait.
    on_start: Callable[[UploadInfo], None] = lambda info: None
    on_commit: Callable[[Committed], None] = lambda committed: None


@dataclass(frozen=True)
class Committed:
    """A file just committed, with what its announcement needs."""

    record: FileRecord
    kind: str
    seconds: float  # from the upload's start to its commit


class UploadSession:
    """A locked upload being written by one request."""

    def __init__(self, services: UploadServices, info: UploadInfo, lock: Lock, ingest: Ingest,
                 started: float) -> None:
        self._services = services
        self._started = started
        self.record: FileRecord | None = None
        self.info = info
        self.lock = lock
        self._ingest = ingest
        self.committed = False
        self._terminated = False

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def create(cls, services: UploadServices, info: UploadInfo) -> UploadSession:
        lock = await services.locks.acquire(info.id)
        try:
            await services.storage.create_upload(info)
            writer = await services.storage.open_writer(info.id)
        except BaseException:
            await asyncio.shield(services.storage.terminate(info.id))
            await lock.release()
            raise
        ingest = Ingest(writer, services.hash_executor, max_size=services.max_size, allowed=services.allowed,
                        checked=info.concat != "partial")
        services.on_start(info)
        return cls(services, info, lock, ingest, time.time())

    @classmethod
    async def resume(cls, services: UploadServices, upload_id: str, *, owner: str) -> UploadSession:
        """Lock an existing upload and pick up where its stored bytes end.

        NotFound for an unknown or expired upload, or one another token created."""
        lock = await services.locks.acquire(upload_id)
        storage = services.storage
        writer: UploadWriter | None = None
        try:
            # At once: on S3 each is a round trip or two, and every PATCH pays them. A
            # writer's offset at open is the stored offset (the storage contract).
            found = await asyncio.gather(_owned_info(services, upload_id, owner), storage.open_writer(upload_id),
                                         return_exceptions=True)
            writer = found[1] if not isinstance(found[1], BaseException) else None
            info, idle = _in_order(*found)[0]
            assert writer is not None
            if idle > services.expiry:
                # Removed only now, with no writer left to put anything back.
                await writer.close()
                writer = None
                await _expire(services, upload_id)
            offset = writer.offset
            checked = info.concat != "partial"
            media = KNOWN_TYPES[info.media] if info.media else None
            hasher = _saved_hash(info, offset) if checked else None
            head = b""
            if checked and (hasher is None or (media is None and offset)):
                # Rare (a request cut off before its hash state was saved, bytes too few to
                # tell the type): read stored bytes back, with no writer open meanwhile,
                # since reading may reshape them (S3 joins its parts to read them).
                await writer.close()
                writer = None
                hasher = await _restore_hash(services, info, offset)
                if media is None:
                    head = await _read_back(storage, upload_id, min(offset, MAX_SNIFF_BYTES))
                writer = await storage.open_writer(upload_id)
        except BaseException:
            if writer is not None:
                await asyncio.shield(writer.close())
            await lock.release()
            raise
        ingest = Ingest(writer, services.hash_executor, max_size=services.max_size, allowed=services.allowed,
                        stored=offset, hasher=hasher, media=media, head=head, checked=checked)
        return cls(services, info, lock, ingest, _timestamp(info.created_at))

    # -- writing --------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Bytes received so far (durable once `flush` returns)."""
        return self._ingest.size

    @property
    def media(self) -> MediaType | None:
        return self._ingest.media

    def on_release_request(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a newer request asks this (silent) one to let go."""
        self.lock.on_release_request = callback

    def expect_until(self, offset: int) -> None:
        """This request's body should take the upload to `offset` (storage may plan for
        it; only `flush` makes bytes count)."""
        self._ingest.expect_until(offset)

    async def append(self, data: bytes) -> None:
        self.lock.mark_active()
        await self._ingest.feed(data)

    async def flush(self) -> int:
        """Everything received is durable, and the info records the hash state for it.

        The info is saved while the bytes are fsynced: a crash between the two leaves a
        hash state ahead of the stored bytes, which `resume` then rebuilds from the start
        (correct, and slow only after such a crash)."""

        async def record_hash() -> None:
            media = self._ingest.media.name if self._ingest.media else None
            self.info = self.info.with_hash(self._ingest.hasher.state(), self._ingest.size, media)
            await self._services.storage.save_info(self.info)

        return await self._ingest.flush(record_hash)

    async def save_info(self, info: UploadInfo) -> None:
        await self._services.storage.save_info(info)
        self.info = info

    async def finish(self) -> IngestResult:
        """The last byte has arrived: decide the type if still open, flush, and report."""
        return await self._ingest.finish()

    async def commit(self, result: IngestResult, *, filename: str, fields: Mapping[str, str],
                     created_at: str | None = None, announce: bool = True) -> FileRecord:
        """Make the finished upload a file with its record; the upload is gone after this.

        `announce=False` leaves telling `on_commit` to the caller (a one-shot request
        with several files announces them once all are committed)."""
        record = FileRecord(
            id=self.info.id, filename=filename, size=result.size, sha256=result.sha256,
            type=result.media.name, mime=result.media.mime, created_at=created_at or utc_now(),
            fields=dict(fields),
            upload_concat="final;" + " ".join(f"/files/{p}" for p in self.info.partials)
            if self.info.concat == "final" else "",
        )
        await self._ingest.close()
        await self._services.storage.commit(self.info.id, record)
        self.committed = True
        self.record = record
        if announce:
            self.announce()
        return record

    def announce(self) -> None:
        """Tell `on_commit` of the committed file."""
        assert self.record is not None
        self._services.on_commit(Committed(self.record, self.info.kind, time.time() - self._started))

    async def discard_since(self, offset: int) -> None:
        """Drop what this request wrote after `offset` (a checksum mismatch); the session
        is done after this, and the info still holds the hash state of `offset` or less."""
        await self._ingest.close()
        await self._services.storage.truncate(self.info.id, offset)

    async def terminate(self) -> None:
        await self._ingest.close()
        await asyncio.shield(self._services.storage.terminate(self.info.id))
        self._terminated = True

    async def close(self) -> None:
        """Release everything; a one-shot upload that was not committed is removed."""
        try:
            await self._ingest.close()
            if self.info.kind == "multipart" and not self.committed and not self._terminated:
                await asyncio.shield(self._services.storage.terminate(self.info.id))
        finally:
            await self.lock.release()


def _timestamp(created_at: str) -> float:
    try:
        return datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


async def inspect_upload(services: UploadServices, upload_id: str, *, owner: str) -> tuple[UploadInfo, int]:
    """An upload's info and durable offset, read under its lock (a stale writer is asked
    to let go first; a live one means 423). NotFound as for `resume`."""
    lock = await services.locks.acquire(upload_id)
    try:
        info = await _live_info(services, upload_id, owner)
        return info, await services.storage.upload_offset(upload_id)
    finally:
        await lock.release()


async def terminate_upload(services: UploadServices, upload_id: str, *, owner: str) -> None:
    """Remove an unfinished upload under its lock (tus termination); NotFound as for `resume`."""
    lock = await services.locks.acquire(upload_id)
    try:
        await _live_info(services, upload_id, owner)
        await services.storage.terminate(upload_id)
    finally:
        await lock.release()


async def _live_info(services: UploadServices, upload_id: str, owner: str) -> UploadInfo:
    """The info of an upload this owner may use; an expired one is removed (under its lock)."""
    info, idle = await _owned_info(services, upload_id, owner)
    await _expire_if_idle(services, upload_id, idle)
    return info


async def _owned_info(services: UploadServices, upload_id: str, owner: str) -> tuple[UploadInfo, float]:
    """The info of an upload this owner may use and its idle seconds; reads only."""
    info: UploadInfo
    idle: float
    info, idle = _in_order(*await asyncio.gather(
        services.storage.get_upload(upload_id), services.storage.upload_idle_seconds(upload_id),
        return_exceptions=True))
    if info.owner and info.owner != owner:
        raise NotFound(f"no upload in progress with id {upload_id!r}")
    return info, idle


async def _expire_if_idle(services: UploadServices, upload_id: str, idle: float) -> None:
    if idle > services.expiry:
        await _expire(services, upload_id)


async def _expire(services: UploadServices, upload_id: str) -> NoReturn:
    await services.storage.terminate(upload_id)
    raise NotFound(f"upload {upload_id!r} expired after being idle too long; start it again")


def _in_order(*outcomes: Any) -> tuple[Any, ...]:
    """Results of a gather(return_exceptions=True), raising the first failure in call order
    (the one a sequential version would have raised)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


def _saved_hash(info: UploadInfo, offset: int) -> ResumableSha256 | None:
    """The SHA-256 of the first `offset` bytes as saved with the upload's last flush, or
    None when the saved state does not cover exactly those bytes."""
    if offset == 0 and info.hash_state is None:
        return ResumableSha256()
    if info.hash_state is not None and info.hash_offset == offset:
        return ResumableSha256(info.hash_state)
    return None


async def _restore_hash(services: UploadServices, info: UploadInfo, offset: int) -> ResumableSha256:
    """The SHA-256 of the first `offset` stored bytes: from the saved state, plus a read
    back of what was stored after it (a request cut off after its last flush, a crash)."""
    if info.hash_state is not None and info.hash_offset <= offset:
        hasher, start = ResumableSha256(info.hash_state), info.hash_offset
    else:
        hasher, start = ResumableSha256(), 0
    loop = asyncio.get_running_loop()
    async for chunk in services.storage.read_upload(info.id, start, offset):
        await loop.run_in_executor(services.hash_executor, hasher.update, chunk)
    return hasher


async def _read_back(storage: Storage, upload_id: str, size: int) -> bytes:
    head = bytearray()
    async for chunk in storage.read_upload(upload_id, 0, size):
        head += chunk
    return bytes(head)
