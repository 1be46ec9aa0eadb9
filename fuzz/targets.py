"""Fuzz targets of uploadsrv's request-parsing layer: each takes raw bytes and raises
(AssertionError or anything unexpected) only on a finding.

The multipart parser is streaming-form-data; the targets fuzz what we own around it:
the Content-Type and parameter rules, display names, `MultipartForm` (our checks
around the library, and the library's exceptions mapped to 400s) and the tus header
rules. Pure Python without atheris, so the default suite replays every kept input
(tests/test_hostile_fuzz_regressions.py); `fuzz/run.py` runs them under atheris for
coverage-guided search. What "a finding" means, per target:
- any exception other than the domain's refusal (MalformedMultipart, or an UploadError
  for the form and the tus rules): a 500 waiting to happen;
- an invariant broken: the form reads a body differently depending on how it is
  chunked, calls its file sink out of order or breaks a limit, a display name keeps a
  folder or an invisible character, a parsed boundary is not RFC 2046, tus metadata
  does not survive its own canonical form.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import random
import re
import unicodedata
from collections.abc import Callable

from uploadsrv import tus_rules
from uploadsrv.config import LimitsConfig
from uploadsrv.errors import MalformedMultipart, UploadError
from uploadsrv.multipart import MultipartForm, display_name
from uploadsrv.multipart.boundary import parse_boundary
from uploadsrv.multipart.params import parse_parameters

_RFC2046 = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_BOUNDARIES = (b"B", b"----WebKitFormBoundary7MA4YWxkTrZu0gW", b"a'b (c)=d?")
_TUS_HEADERS = ("Tus-Resumable", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata", "Upload-Checksum",
                "Upload-Concat", "Upload-Offset")
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}
_LIMITS = LimitsConfig(max_fields=3, max_field_size=64, max_files_per_request=2)
_FORBIDDEN = re.compile(r"[\x00\r\n]")
_CUT_OFF = "malformed_multipart (cut off)"


def _text(data: bytes) -> str:
    # How aiohttp hands header values over: UTF-8, undecodable bytes as surrogates.
    return data.decode("utf-8", "surrogateescape")


def content_type(data: bytes) -> None:
    """The request's Content-Type: a boundary comes out RFC 2046-valid, or a 400."""
    try:
        boundary = parse_boundary(_text(data))
    except MalformedMultipart:
        return
    assert _RFC2046.fullmatch(boundary.decode("ascii")), boundary


def parameters(data: bytes) -> None:
    """Any header value through the RFC 9110/2231/5987 parameter parser."""
    try:
        params = parse_parameters(_text(data), "fuzz")
    except MalformedMultipart:
        return
    for name, value in params.values.items():
        assert name == name.lower() and "*" not in name, name
        assert not _FORBIDDEN.search(value), value


def display_names(data: bytes) -> None:
    """A display name: no folder, nothing invisible, at most 255 characters."""
    name = display_name(_text(data))
    assert "/" not in name and "\\" not in name, name
    assert len(name) <= 255
    assert not [char for char in name if unicodedata.category(char) in _HIDDEN], ascii(name)


class _Sink:
    """A FileSink that keeps what it was given and checks the order of its calls."""

    def __init__(self) -> None:
        self.files: list[tuple[str, bytes]] = []
        self.open = False

    async def start_file(self, filename: str) -> None:
        assert not self.open, "a file started inside another"
        self.files.append((filename, b""))
        self.open = True

    async def file_data(self, chunk: bytes) -> None:
        assert self.open and chunk, "data outside a file, or empty"
        name, content = self.files[-1]
        self.files[-1] = (name, content + chunk)

    async def end_file(self) -> None:
        assert self.open, "a file ended that was not open"
        self.open = False


Outcome = tuple[list[tuple[str, bytes]], dict[str, str]] | str


def _read(boundary: bytes, pieces: list[bytes], *, max_files: int, declared: bool) -> Outcome:
    """What MultipartForm makes of `pieces`: (files, fields), or the refusal's code
    (`_CUT_OFF` for a body that ended too soon)."""
    sink = _Sink()

    async def run() -> Outcome:
        form = MultipartForm(f'multipart/form-data; boundary="{boundary.decode()}"', file_fields=("file", "files"),
                             max_files=max_files, limits=_LIMITS, sink=sink,
                             body_length=sum(map(len, pieces)) if declared else None)
        for piece in pieces:
            await form.feed(piece)
        form.finish()
        return sink.files, form.fields

    try:
        outcome = _loop().run_until_complete(run())
    except UploadError as error:
        return _CUT_OFF if str(error).startswith("the body ended") else error.code
    files, fields = outcome
    assert not sink.open and 1 <= len(files) <= max_files, files
    assert len(fields) <= _LIMITS.max_fields and all(len(value) <= 64 for value in fields.values()), fields
    delimiter = b"\r\n--" + boundary + b"\r\n"
    for name, content in files:
        assert not [char for char in name if unicodedata.category(char) in _HIDDEN], ascii(name)
        assert delimiter not in content and not content.startswith(b"--" + boundary), content[:80]
    assert not any(_FORBIDDEN.search(name) for name in fields), fields
    return outcome


@functools.cache
def _loop() -> asyncio.AbstractEventLoop:
    # One loop for the process: asyncio.run per input costs ~1 ms, most of a run.
    loop = asyncio.new_event_loop()
    atexit.register(loop.close)
    return loop


def _pieces(body: bytes, seed: int, most: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(1, most)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]


def form(data: bytes) -> None:
    """A whole body through MultipartForm (data[0]: the boundary, data[1]: the chunking):
    only UploadErrors, the sink in order, the limits kept, and the same reading (or the
    same refusal) whatever the chunking."""
    if len(data) < 2:
        return
    boundary = _BOUNDARIES[data[0] % len(_BOUNDARIES)]
    max_files = 1 + data[1] % 2
    body = data[2:]
    whole = _read(boundary, [body], max_files=max_files, declared=True)
    split = _read(boundary, _pieces(body, data[1], 16), max_files=max_files, declared=False)
    if not boundary_in_content(body, boundary):
        assert same_reading(whole, split), (whole, split)


def boundary_in_content(body: bytes, boundary: bytes) -> bool:
    """Whether "--boundary" or "boundary--" occurs outside the delimiters (RFC 2046 forbids
    the boundary in content). streaming-form-data 2.1 skips over content from a partial
    match of its close delimiter and keeps that match: when the next chunk happens to
    begin with the rest of the close delimiter, it sees the end of the form there. Such
    a body is read differently depending on the chunking (stored, or refused)."""
    dash = b"--" + boundary
    rest = body.replace(b"\r\n" + dash + b"\r\n", b"\0").replace(b"\r\n" + dash + b"--", b"\0")
    rest = rest.removeprefix(dash + b"\r\n")
    return dash in rest or boundary + b"--" in rest


def same_reading(one: Outcome, other: Outcome) -> bool:
    """Two chunkings of a body read alike: the same files and fields, or the same refusal.

    One exception: the parser hands content over when a delimiter comes or, at a chunk's
    end, when enough is pending (the amount depends on the chunks). A body cut off while
    content is pending is `_CUT_OFF` in one chunking, and in another its content may
    first break a field's limit or begin with the boundary."""
    if one == other:
        return True
    return _CUT_OFF in (one, other) and {one, other} - {_CUT_OFF} <= {"field_too_large", "malformed_multipart"}


_CONTENT = b"ID3\x04\x00 content\r\n--B-\r\n-"


def part_headers(data: bytes) -> None:
    """One part's header block (the parser's email-based header reading) inside a
    well-framed form: only UploadErrors; when taken, the content is intact."""
    block = data.split(b"\r\n\r\n", 1)[0]  # a blank line in it would end the block early
    block = block if block.endswith(b"\r\n") else block + b"\r\n"
    body = b"--B\r\n" + block + b"\r\n" + _CONTENT + b"\r\n--B--\r\n"
    whole = _read(b"B", [body], max_files=2, declared=True)
    assert same_reading(_read(b"B", _pieces(body, len(data), 8), max_files=2, declared=False), whole)
    if not isinstance(whole, str):
        files, fields = whole
        assert [content for _, content in files] == [_CONTENT] and not fields, whole


def tus_headers(data: bytes) -> None:
    """tus header rules: an UploadError or a meaning; metadata survives its canonical form."""
    headers: dict[str, str] = {}
    for line in data.split(b"\n"):
        if line:
            headers[_TUS_HEADERS[line[0] % len(_TUS_HEADERS)]] = _text(line[1:])
    calls: list[Callable[[], object]] = [
        lambda: tus_rules.check_version(headers),
        lambda: tus_rules.parse_creation(headers, 1 << 30),
        lambda: tus_rules.parse_checksum(headers.get("Upload-Checksum")),
        lambda: tus_rules.parse_number(headers.get("Upload-Offset"), "Upload-Offset"),
        lambda: tus_rules.parse_concat(headers.get("Upload-Concat")),
    ]
    for call in calls:
        try:
            call()
        except UploadError:
            pass
    try:
        decoded, canonical = tus_rules.parse_metadata(headers.get("Upload-Metadata"))
    except UploadError:
        return
    assert tus_rules.parse_metadata(canonical) == (decoded, canonical)
    assert tus_rules.parse_metadata(tus_rules.format_metadata(decoded))[0] == decoded


TARGETS: dict[str, Callable[[bytes], None]] = {
    "content_type": content_type,
    "parameters": parameters,
    "display_names": display_names,
    "part_headers": part_headers,
    "form": form,
    "tus_headers": tus_headers,
}
