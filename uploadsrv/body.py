"""Reading a request body: big reads, an idle timeout per read, and a byte ceiling.

aiohttp neither limits streamed reads (`client_max_size` only covers `read()`) nor times
out a read from a client that went silent, so both live here, in one place for every
upload protocol.
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader

from .errors import FileTooLarge, UploadTimeout, format_size

# iter_chunked(n) returns at most n bytes; n >= 1 MiB reads as fast as iter_any (about
# 2.5 GB/s here), 16-64 KiB at a third of that.
READ_SIZE = 1 << 20


class BodyReader:
    """Yields a body's chunks until its end; raises 408 on silence, 413 past `max_bytes`."""

    def __init__(self, content: StreamReader, *, idle_timeout: float, max_bytes: int) -> None:
        self._chunks = content.iter_chunked(READ_SIZE)
        self._idle_timeout = idle_timeout
        self._max_bytes = max_bytes
        self.received = 0

    async def read(self) -> bytes | None:
        """The next chunk, or None once the body has ended."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise UploadTimeout(
                f"no data arrived for {self._idle_timeout:g} s, so the upload was aborted; "
                "check the connection and upload again"
            ) from None
        self.received += len(chunk)
        if self.received > self._max_bytes:
            raise FileTooLarge(
                f"the request body is larger than the limit of {format_size(self._max_bytes)}"
            )
        return chunk
