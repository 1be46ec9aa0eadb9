"""The ingest pipeline's hand-off to worker threads when a request is cancelled mid-write.

A disk that is still busy with a batch at the moment a request is cancelled (shutdown)
cannot be caused on demand, so this is the one place with a fake part: its write blocks
until the test lets it go. Everything else is the real Ingest on a real executor.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import apoll

from uploadsrv.uploads.ingest import BATCH_BYTES, Ingest


class SlowPart:
    """An upload writer whose disk is slow: each write waits (in a thread) until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writing = False
        self.closed = False
        self.closed_during_write = False
        self.written = 0

    @property
    def offset(self) -> int:
        return self.written

    async def write(self, pieces: Sequence[bytes]) -> None:
        self.writing = True
        await asyncio.to_thread(self.release.wait, 10)
        self.written += sum(len(piece) for piece in pieces)
        self.writing = False

    async def flush(self) -> int:
        return self.written

    async def close(self) -> None:
        self.closed_during_write = self.closed_during_write or self.writing
        self.closed = True


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


async def test_a_cancelled_request_releases_its_part_only_after_the_write_in_flight(
    mp3: bytes, executor: ThreadPoolExecutor
) -> None:
    part = SlowPart()
    ingest = Ingest(part, executor, max_size=1 << 30, allowed={"mp3"})
    await ingest.feed(mp3)
    await ingest.feed(bytes(BATCH_BYTES))  # a full batch: handed to the workers
    await apoll(lambda: part.writing)

    # The next batch waits for the first; the request is cancelled meanwhile.
    feeding = asyncio.create_task(ingest.feed(bytes(BATCH_BYTES)))
    await asyncio.sleep(0)
    feeding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await feeding

    closing = asyncio.create_task(ingest.close())
    for _ in range(20):  # loop iterations in which a wrong close() would release at once
        await asyncio.sleep(0)
    assert not part.closed, "the part was released while a worker was still writing to it"
    part.release.set()
    await closing
    assert part.closed and not part.closed_during_write
    assert part.written == len(mp3) + BATCH_BYTES


async def test_finish_hashes_and_writes_every_batch_in_order(mp3: bytes, executor: ThreadPoolExecutor) -> None:
    part = SlowPart()
    part.release.set()
    ingest = Ingest(part, executor, max_size=1 << 30, allowed={"mp3"})
    body = mp3 + bytes(range(256)) * (3 * BATCH_BYTES // 256 + 7)
    for start in range(0, len(body), 300_001):
        await ingest.feed(body[start : start + 300_001])
    result = await ingest.finish()
    await ingest.close()
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.size == part.written == len(body)
    assert result.media.name == "mp3"
