"""A multipart/form-data body taken apart as it streams into file and field events:
each file part's start, bytes and end go to a `FileSink`, text fields into memory, and
every trap of the parser becomes a 400.

Owns the form's rules: which part names carry files, how many files and fields, how big a
field and a part's headers may be, and when the body counts as complete. The parser is
streaming-form-data, fed through its async path; this module knows nothing of uploads,
storage or HTTP, and never reads the body a second time.

Around the library: the boundary is read by RFC rules and handed to it quoted
(`boundary.py`); the preamble and all from the close delimiter on are ours (`framing.py`);
its pieces end where it reads them alike (`pieces.py`); its exceptions on client headers
are 400s; what it hands our targets is checked (a part that starts while another is open
had two Content-Dispositions; names with NUL, CR or LF; content that begins with the
boundary, where RFC 2046 sees a delimiter it missed); the close delimiter must close the
last part in its reading too (`--B` CRLF `--B--` reuses a line's CRLF); bytes that reach
no target are bounded (it reads endless part headers at quadratic cost).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Protocol

from streaming_form_data import ParseFailedException, StreamingFormDataParser
from streaming_form_data.targets import BaseTarget

from ..config import LimitsConfig
from ..errors import (
    FieldTooLarge, MalformedMultipart, MissingFile, TooManyFields, TooManyFiles,
    UnexpectedPart, format_size,
)
from .boundary import parse_boundary
from .framing import MAX_EPILOGUE, MAX_PREAMBLE, Framing
from .names import display_name
from .pieces import Pieces

# Boundary lines and part headers allowed per part; real clients send a few hundred bytes.
PART_OVERHEAD = 16 << 10
# What streaming-form-data's header parsing (Python's email package) raises on part
# headers a client controls: a charset that is no codec, a parameter without a value,
# bytes that are not UTF-8. Each is the client's malformed form, never a 500.
_PARSER_FAULTS = (ParseFailedException, LookupError, IndexError, ValueError, UnicodeError, AttributeError)
# NUL ends a name in C parsers (a filter in front reads "a" in "a\0.exe"); CR and LF frame headers.
_FORBIDDEN = re.compile(r"[\x00\r\n]")


def multipart_body_limit(limits: LimitsConfig, max_files: int) -> int:
    """The largest body a form with `max_files` files may have (for 413 on Content-Length)."""
    return (
        max_files * (limits.max_file_size + PART_OVERHEAD)
        + limits.max_fields * (limits.max_field_size + PART_OVERHEAD)
        + MAX_PREAMBLE + MAX_EPILOGUE
    )


class FileSink(Protocol):
    """Where a form's files go, one after another."""

    async def start_file(self, filename: str) -> None:
        """A file part begins; `filename` is the display name (no folders, no controls)."""

    async def file_data(self, chunk: bytes) -> None:
        """The next bytes of the current file (never empty)."""

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
        self._form._start_field(self.multipart_filename)

    async def on_data_received_async(self, chunk: bytes) -> None:
        self._form._field_data(chunk)

    async def on_finish_async(self) -> None:
        self._form._finish_field()


class MultipartForm:
    """One request's form. Feed it the body, then `finish()`."""

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
        boundary = parse_boundary(content_type)
        # The parser sees the boundary as we read it, quoted: its own reading of the
        # client's Content-Type (email's) differs on RFC 2231 and unquoted specials.
        headers = {"Content-Type": f'multipart/form-data; boundary="{boundary.decode("ascii")}"'}
        self._framing = Framing(boundary, body_length=body_length)
        self._dash = b"--" + boundary
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
        self._pieces = Pieces(boundary)
        self._delivered = 0
        self._parts = 0
        self._closing = False  # the close delimiter's last byte is being fed
        self._closed_a_part = False  # ... and the parser closed a part with it
        self._content_start: bytearray | None = None  # a part's first bytes, until checked
        self._files = 0
        self._in_file = False
        self._file_ended = False  # the parser ended the file; the sink hears it once the parse succeeds
        self._field_name = ""
        self._field: bytearray | None = None
        self._field_parts = 0  # parts, not names: a repeated name counts every time
        self.fields: dict[str, str] = {}

    # -- feeding ---------------------------------------------------------------------

    async def feed(self, chunk: bytes) -> None:
        """Take the next body bytes; raises an UploadError as soon as the form is refused."""
        data, after = self._framing.cut(chunk)
        if after is None:
            await self._parse(self._pieces.next(data))
            return
        if data:
            # The close delimiter's last byte comes in the last piece: the parser must close
            # the last part with it. It does not when it read the delimiter's CRLF as
            # something else (the end of a boundary or header line), so it sees another
            # form than RFC 2046 does.
            before, last = self._pieces.last(data)
            await self._parse(before)
            self._closing = True
            await self._parse(last)
            if self._parts and not self._closed_a_part:
                raise MalformedMultipart("the closing multipart boundary does not close the last part: give each "
                                         "part a name, put CRLF between a part's blank line and the boundary, "
                                         "and don't reuse the CRLF of a boundary line")
        self._framing.after_close(after)

    async def _parse(self, data: bytes) -> None:
        if not data:
            return
        self._fed += len(data)
        try:
            await self._parser.adata_received(data)
        except UnicodeDecodeError:
            # The line is not UTF-8, or an RFC 2231 value is not in the charset it names.
            raise MalformedMultipart("a part header cannot be decoded; send field and file names in UTF-8") from None
        except _PARSER_FAULTS as error:
            raise MalformedMultipart(f"the body is not valid multipart/form-data ({_reason(error)})") from None
        await self._end_file()
        if self._fed - self._delivered > PART_OVERHEAD * (self._parts + 1):
            raise MalformedMultipart(f"multipart part headers are longer than {format_size(PART_OVERHEAD)}")

    def _match_field(self, _registered: str, incoming: str) -> bool:
        if incoming in self._file_fields:
            return False
        self._field_name = incoming
        return True

    # -- every part ------------------------------------------------------------------

    def _start_part(self, name: str, filename: str | None) -> None:
        self._closed_a_part = False
        if self._in_file or self._field is not None:
            # The parser ends parts only at delimiters: a second start in between is a
            # second Content-Disposition in one header block.
            raise MalformedMultipart("a part has two Content-Disposition headers")
        if _FORBIDDEN.search(name) or (filename and _FORBIDDEN.search(filename)):
            raise MalformedMultipart("a part's name or file name holds NUL, CR or LF")
        self._parts += 1
        self._content_start = bytearray()

    def _check_content_start(self, chunk: bytes) -> None:
        """Refuse content that begins with the boundary: after the blank line ending a
        part's headers, RFC 2046 reads CRLF --boundary as a delimiter (an empty part),
        where the parser reads content."""
        start = self._content_start
        if start is None:
            return
        start += chunk[: len(self._dash) - len(start)]
        if len(start) < len(self._dash):
            return
        self._content_start = None
        if start == self._dash:
            raise MalformedMultipart("a part's content begins with the multipart boundary; an empty part "
                                     "needs CRLF before the next boundary line")

    # -- file parts ------------------------------------------------------------------

    async def _start_file(self, filename: str | None) -> None:
        await self._end_file()
        self._start_part("", filename)
        if self._files + 1 > self._max_files:
            if self._max_files == 1:
                raise TooManyFiles("/upload takes exactly one file part; use /upload-multiple for several files")
            raise TooManyFiles(f"a request may carry at most {self._max_files} files")
        self._files += 1
        self._in_file = True
        await self._sink.start_file(display_name(filename))

    async def _file_data(self, chunk: bytes) -> None:
        if not chunk:
            return  # the parser hands over an empty piece before a delimiter
        self._check_content_start(chunk)
        self._delivered += len(chunk)
        await self._sink.file_data(chunk)

    async def _finish_file(self) -> None:
        # The parser also finishes the open part when it fails on a header line; then
        # the file is not complete, and the sink must not hear that it is.
        if self._in_file:
            self._in_file = False
            self._file_ended = True
            self._closed_a_part = self._closing

    async def _end_file(self) -> None:
        if self._file_ended:
            self._file_ended = False
            await self._sink.end_file()

    # -- text fields -----------------------------------------------------------------

    def _start_field(self, filename: str | None) -> None:
        name = self._field_name
        self._start_part(name, filename)
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
        self._check_content_start(chunk)
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
        self._closed_a_part = self._closing

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> None:
        """Check that the whole body arrived, every part is complete and a file came."""
        self._framing.finish()
        if self._in_file or self._file_ended or self._field is not None:
            raise MalformedMultipart("the body ended inside a part: the upload was cut off")
        if not self._files:
            names = " or ".join(repr(n) for n in sorted(self._file_fields))
            raise MissingFile(f"no file in the form; send the file in a part named {names}")


def _reason(error: BaseException) -> str:
    """The parser's words, or the kind of fault when they would only echo client bytes."""
    if isinstance(error, ParseFailedException):
        return str(error)
    return "a part header cannot be read"
