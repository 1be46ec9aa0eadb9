"""A multipart/form-data body taken apart as it streams into file and field events:
each file part's start, bytes and end go to a `FileSink`, text fields into memory, and
every trap of the parser becomes a 400.

Owns the form's rules: which part names carry files, how many files and fields, how big a
field and a part's headers may be, and when the body counts as complete. It feeds
streaming-form-data's parser through its async path; it knows nothing of uploads,
storage or HTTP.

streaming-form-data 2.1 never reports a truncated body or a missing closing boundary,
misreads bytes that follow the closing boundary in the same chunk (they end up in the
file), raises UnicodeDecodeError on non-UTF-8 part headers and accepts endless part
headers at quadratic cost. So this module finds the closing boundary itself and stops
feeding there, accepts a file only when its part finished before the closing boundary,
and bounds the bytes it feeds that reach no target.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Protocol
from urllib.parse import unquote

from streaming_form_data import ParseFailedException, StreamingFormDataParser
from streaming_form_data.parser import parse_content_boundary
from streaming_form_data.targets import BaseTarget

from .config import LimitsConfig
from .errors import (
    FieldTooLarge, MalformedMultipart, MissingFile, TooManyFields, TooManyFiles,
    UnexpectedPart, format_size,
)

# Boundary lines and part headers allowed per part; real clients send a few hundred bytes.
PART_OVERHEAD = 16 << 10
# An epilogue after the closing boundary is legal but has no use; don't read much of it.
MAX_EPILOGUE = 64 << 10
MAX_BOUNDARY = 70  # RFC 2046
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def multipart_body_limit(limits: LimitsConfig, max_files: int) -> int:
    """The largest body a form with `max_files` files may have (for 413 on Content-Length)."""
    return (
        max_files * (limits.max_file_size + PART_OVERHEAD)
        + limits.max_fields * (limits.max_field_size + PART_OVERHEAD)
        + MAX_EPILOGUE
    )


def display_name(raw: str | None) -> str:
    """The client's file name, for display only: no folders, no control characters.

    Browsers percent-encode `"`, CR and LF in names and some clients (aiohttp) encode
    every non-ASCII character, so escapes are decoded where they form valid UTF-8."""
    try:
        name = unquote(raw or "", errors="strict")
    except UnicodeDecodeError:
        name = raw or ""
    name = re.split(r"[/\\]", name)[-1]
    return _CONTROL.sub("", name)[:255]


class FileSink(Protocol):
    """Where a form's files go, one after another."""

    async def start_file(self, filename: str) -> None:
        """A file part begins; `filename` is the display name (no folders, no controls)."""

    async def file_data(self, chunk: bytes) -> None:
        """The next bytes of the current file."""

    async def end_file(self) -> None:
        """The current file part is complete."""


class _FileParts(BaseTarget):
    """Every part named as a file field: its events go to the form's sink."""

    def __init__(self, form: MultipartForm) -> None:
        super().__init__()
        self._form = form

    async def on_start_async(self) -> None:
        await self._form._start_file(self.multipart_filename)

    async def on_data_received_async(self, chunk: bytes) -> None:
        await self._form._file_data(chunk)

    async def on_finish_async(self) -> None:
        await self._form._finish_file()


class _TextFields(BaseTarget):
    """Every other part: a text field kept in memory, up to `limits.max_field_size`."""

    def __init__(self, form: MultipartForm) -> None:
        super().__init__()
        self._form = form

    async def on_start_async(self) -> None:
        # The parser keeps the previous part's filename; ours is reset after each part.
        self._form._start_field(self.multipart_filename)

    async def on_data_received_async(self, chunk: bytes) -> None:
        self._form._field_data(chunk)

    async def on_finish_async(self) -> None:
        self._form._finish_field()
        self.multipart_filename = None


class MultipartForm:
    """One request's form. Feed it the body, then `finish()`; always `close()`."""

    def __init__(
        self,
        content_type: str,
        *,
        file_fields: Collection[str],
        max_files: int,
        limits: LimitsConfig,
        sink: FileSink,
        body_length: int | None = None,
    ) -> None:
        headers = {"Content-Type": content_type}
        try:
            boundary = parse_content_boundary(headers)
        except ParseFailedException:
            raise MalformedMultipart(
                "the Content-Type has no multipart boundary; send multipart/form-data with a boundary"
            ) from None
        if len(boundary) > MAX_BOUNDARY:
            raise MalformedMultipart(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
        self._ender = b"\r\n--" + boundary + b"--"
        # With a declared length the closing boundary can only lie in the body's last
        # bytes, so only those are searched (a search of every chunk costs 0.2 s/GiB).
        self._search_from = 0 if body_length is None else max(0, body_length - MAX_EPILOGUE - len(self._ender) - 2)
        self._parser = StreamingFormDataParser(headers, strict=True)
        files = _FileParts(self)
        for name in file_fields:
            self._parser.register(name, files)
        self._parser.register("*", _TextFields(self), matches=self._match_field)

        self._file_fields = frozenset(file_fields)
        self._max_files = max_files
        self._limits = limits
        self._sink = sink

        self._fed = 0
        self._delivered = 0
        self._parts = 0
        # A CRLF "before" the body lets an empty form (--B-- alone) match the closing boundary.
        self._tail = b"\r\n"
        self._ended = False
        self._epilogue = 0
        self._files = 0
        self._in_file = False
        self._field_name = ""
        self._field: bytearray | None = None
        self._field_parts = 0  # parts, not names: a repeated name counts every time
        self.fields: dict[str, str] = {}

    # -- feeding ---------------------------------------------------------------------

    async def feed(self, chunk: bytes) -> None:
        """Take the next body bytes; raises an UploadError as soon as the form is refused."""
        if self._ended:
            self._epilogue += len(chunk)
            if self._epilogue > MAX_EPILOGUE:
                raise MalformedMultipart("too much data after the closing multipart boundary")
            return
        end = self._find_end(chunk) if self._fed + len(chunk) > self._search_from else None
        keep = len(self._ender) - 1
        self._tail = (self._tail + chunk[-keep:])[-keep:]
        data = chunk if end is None else chunk[:end]
        self._fed += len(data)
        try:
            await self._parser.adata_received(data)
        except ParseFailedException as error:
            raise MalformedMultipart(f"the body is not valid multipart/form-data ({error})") from None
        except UnicodeDecodeError:
            raise MalformedMultipart("a part header is not valid UTF-8; send UTF-8 field and file names") from None
        if end is not None:
            self._ended = True
            self._epilogue = len(chunk) - end
        if self._fed - self._delivered > PART_OVERHEAD * (self._parts + 1):
            raise MalformedMultipart(
                f"multipart part headers are longer than {format_size(PART_OVERHEAD)}"
            )

    def _find_end(self, chunk: bytes) -> int | None:
        """Where the closing boundary ends in `chunk`, also when it straddles two chunks."""
        ender = self._ender
        if self._tail:
            window = self._tail + chunk[: len(ender) - 1]
            found = window.find(ender)
            if found != -1:
                return found + len(ender) - len(self._tail)
        found = chunk.find(ender)
        return None if found == -1 else found + len(ender)

    def _match_field(self, _registered: str, incoming: str) -> bool:
        if incoming in self._file_fields:
            return False
        self._field_name = incoming
        return True

    # -- file parts ------------------------------------------------------------------

    async def _start_file(self, filename: str | None) -> None:
        self._parts += 1
        if self._files + 1 > self._max_files:
            if self._max_files == 1:
                raise TooManyFiles("/upload takes exactly one file part; use /upload-multiple for several files")
            raise TooManyFiles(f"a request may carry at most {self._max_files} files")
        self._files += 1
        self._in_file = True
        await self._sink.start_file(display_name(filename))

    async def _file_data(self, chunk: bytes) -> None:
        self._delivered += len(chunk)
        await self._sink.file_data(chunk)

    async def _finish_file(self) -> None:
        if not self._in_file:
            return  # the parser finishes a part twice after a header error
        self._in_file = False
        await self._sink.end_file()

    # -- text fields -----------------------------------------------------------------

    def _start_field(self, filename: str | None) -> None:
        self._parts += 1
        name = self._field_name
        if filename:
            names = " or ".join(repr(n) for n in sorted(self._file_fields))
            if not self._files:
                raise MissingFile(f"the form has no part named {names}; it has a file in the part {name!r}: "
                                  f"send the file in the part named {names}")
            raise UnexpectedPart(f"form part {name!r} carries a file; send files in the part named {names}")
        self._field_parts += 1
        if self._field_parts > self._limits.max_fields:
            raise TooManyFields(f"a request may carry at most {self._limits.max_fields} text fields")
        self._field = bytearray()

    def _field_data(self, chunk: bytes) -> None:
        assert self._field is not None
        self._delivered += len(chunk)
        self._field += chunk
        if len(self._field) > self._limits.max_field_size:
            raise FieldTooLarge(
                f"form field {self._field_name!r} is larger than {format_size(self._limits.max_field_size)}"
            )

    def _finish_field(self) -> None:
        if self._field is None:
            return
        self.fields[self._field_name] = self._field.decode("utf-8", errors="replace")
        self._field = None

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> None:
        """Check that the whole body arrived, every part is complete and a file came."""
        if not self._ended or self._in_file:
            raise MalformedMultipart(
                "the body ended before the closing multipart boundary: the upload was cut off"
            )
        if not self._files:
            names = " or ".join(repr(n) for n in sorted(self._file_fields))
            raise MissingFile(f"no file in the form; send the file in a part named {names}")
