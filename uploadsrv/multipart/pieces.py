"""Where the pieces fed to streaming-form-data may end: `Pieces`.

Owns one workaround of the library, so that it reads a body the same way however the
body was chunked. After each delimiter but the first, streaming-form-data 2.1 keeps a
stale CRLF matched towards the close delimiter, and when a piece ends it reads the next
piece's first byte twice. So a piece that ends
- at a delimiter's LF makes it skip a blank line after the delimiter that it refuses
  when both come in one piece;
- at the blank line before a part's content, or in the content's first bytes while they
  still look like "--boundary--", makes it fail on valid forms ("internal errors", for
  content that begins with "-") or miss the close delimiter of an empty last part.
Held back a few bytes, those places always come in the middle of a piece.

Looks at no more than a piece's last few dozen bytes: no pass over the body. Pure.
"""

from __future__ import annotations

_BLANK_LINE = b"\r\n\r\n"


class Pieces:
    """Cuts the bytes for the parser into pieces that end only where it reads them alike."""

    def __init__(self, boundary: bytes) -> None:
        # How far into content the stale match can reach: "--boundary--" and some.
        self._window = len(boundary) + 6
        self._held = b""
        self._tail = b""  # the last bytes handed out: a blank line may begin in them

    def next(self, data: bytes) -> bytes:
        """The piece to feed now, of the held bytes and `data`; the rest is held."""
        data = self._held + data
        end = self._safe_end(data, len(data))
        self._held = data[end:]
        piece = data[:end] if end < len(data) else data
        self._tail = (self._tail + piece[-3:])[-3:]
        return piece

    def last(self, data: bytes) -> tuple[bytes, bytes]:
        """The held bytes and `data`, which end with the close delimiter, in two pieces:
        the second as short as the parser allows (its last byte at least)."""
        data = self._held + data
        self._held = b""
        end = self._safe_end(data, len(data) - 1)
        return data[:end], data[end:]

    def _safe_end(self, data: bytes, end: int) -> int:
        """`end`, or the closest earlier place where a piece of `data` may end."""
        low = max(0, end - self._window - len(_BLANK_LINE))
        head = self._tail if low == 0 else b""
        text = head + data[low:end]
        found = text.find(_BLANK_LINE)
        while found != -1:
            content = found + len(_BLANK_LINE) - len(head) + low  # where content would begin, in data
            if content <= end < content + self._window:
                # Before the blank line's LF: the LF and the content's first bytes come whole.
                return max(0, content - 1)
            found = text.find(_BLANK_LINE, found + 1)
        if end and data[end - 1:end] == b"\n":
            return end - 1  # a delimiter's LF comes with the byte after it
        return end
