"""Where a multipart body begins and ends for streaming-form-data: `Framing`.

Owns the bytes the library never sees. Before the first delimiter: a preamble, legal
(RFC 2046) but refused by the library, so it is skipped here. From the close delimiter
on: the library never reports a close delimiter and misreads bytes after it in the same
chunk, so the close delimiter is found here, the rest of its line is checked (transport
padding, then CRLF or the end of the body) and the epilogue after it is bounded.

Costs no second pass over the body: with a declared length only the body's last bytes
can hold the close delimiter, so only those are searched. Pure: no I/O, no library;
every fault is a `MalformedMultipart`.
"""

from __future__ import annotations

from ..errors import MalformedMultipart, format_size

# A preamble is legal and has no use; don't read much of it.
MAX_PREAMBLE = 16 << 10
# An epilogue after the closing boundary is legal but has no use; don't read much of it.
MAX_EPILOGUE = 64 << 10
_PADDING = b" \t"
_CRLF = b"\r\n"


class Framing:
    """One body's framing: `cut` each chunk, `after_close` what follows the close
    delimiter, then `finish`."""

    def __init__(self, boundary: bytes, *, body_length: int | None) -> None:
        self._dash = b"--" + boundary
        self._first = _CRLF + self._dash  # the first delimiter, after a preamble
        self._ender = _CRLF + self._dash + b"--"
        # With a declared length the closing boundary can only lie in the body's last
        # bytes, so only those are searched (a search of every chunk costs 0.2 s/GiB).
        self._search_from = 0 if body_length is None else max(0, body_length - MAX_EPILOGUE - len(self._ender) - 2)
        self._received = 0
        self._preamble: bytearray | None = bytearray()  # None once the first delimiter came
        self._searched = 0
        # A CRLF "before" the body lets an empty form (--B-- alone) match the closing boundary.
        self._tail = _CRLF
        self.closed = False
        # The close delimiter's line after "--B--": b"" or a pending b"\r"; None once its CRLF came.
        self._close_line: bytes | None = b""
        self._epilogue = 0

    def cut(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        """`chunk` split into the bytes the parser must see and, from the close delimiter
        on, the bytes after it (None before): hand those to `after_close` once the
        parser has seen the rest, so faults come in the order of the body's bytes."""
        self._received += len(chunk)
        if self.closed:
            return b"", chunk
        if self._preamble is not None:
            chunk = self._skip_preamble(chunk)
            if not chunk:
                return b"", None
        end = self._find_end(chunk) if self._received > self._search_from else None
        keep = len(self._ender) - 1
        self._tail = (self._tail + chunk[-keep:])[-keep:]
        if end is None:
            return chunk, None
        self.closed = True
        return chunk[:end], chunk[end:]

    def finish(self) -> None:
        """Raise unless the close delimiter came and its line is complete."""
        if not self.closed:
            raise MalformedMultipart("the body ended before the closing multipart boundary: the upload was cut off")
        if self._close_line == b"\r":
            raise MalformedMultipart("the closing multipart boundary line ends in a bare CR")

    def _skip_preamble(self, chunk: bytes) -> bytes:
        """The bytes from the first delimiter on; b"" while it has not arrived yet."""
        assert self._preamble is not None
        self._preamble += chunk
        data = self._preamble
        if data.startswith(self._dash):
            found = 0
        else:
            # Search only what may hold a delimiter not searched for yet: a client that
            # sends its preamble a byte at a time costs no quadratic work.
            found = data.find(self._first, max(0, self._searched - len(self._first) + 1))
            self._searched = len(data)
            found = -1 if found == -1 else found + len(_CRLF)
        if found == -1:
            if len(data) > MAX_PREAMBLE:
                raise MalformedMultipart(f"no multipart boundary line in the body's first {format_size(MAX_PREAMBLE)}; "
                                         "is the boundary in the Content-Type right?")
            return b""
        self._preamble = None
        return bytes(data[found:])

    def _find_end(self, chunk: bytes) -> int | None:
        """Where the closing boundary ends in `chunk`, also when it straddles two chunks."""
        ender = self._ender
        window = self._tail + chunk[: len(ender) - 1]
        found = window.find(ender)
        if found != -1:
            return found + len(ender) - len(self._tail)
        found = chunk.find(ender)
        return None if found == -1 else found + len(ender)

    def after_close(self, data: bytes) -> None:
        """Bytes after "--B--": transport padding, CRLF, then an epilogue (RFC 2046)."""
        self._epilogue += len(data)
        if self._epilogue > MAX_EPILOGUE:
            raise MalformedMultipart("too much data after the closing multipart boundary")
        if self._close_line is None or not data:
            return
        rest = (self._close_line + data).lstrip(_PADDING)
        if rest.startswith(_CRLF):
            self._close_line = None
        elif rest in (b"", b"\r"):
            self._close_line = rest  # padding so far; a lone CR waits for its LF
        else:
            # "--B--X": RFC 2046 allows only padding there, and a parser that takes any
            # line starting with the boundary as a delimiter reads this line differently.
            raise MalformedMultipart("bytes follow the closing multipart boundary on its line")
