"""Property-based tests of the form (hypothesis, bounded and derandomized): generated
RFC 2046/7578 forms store byte-exact files whatever the TCP splits, generated mutations
of them never get a 5xx, a non-JSON refusal, a traceback in the log or a leftover, and
`MultipartForm` reads the same form (or refuses it the same way) however the body is
chunked.

The valid forms are those streaming-form-data (the parser) reads as RFC 2046 does: no
transport padding after a delimiter other than the close delimiter (the parser refuses
it), and no two filename parameters where the first is not the one RFC 6266 takes.
UPLOADSRV_HYPOTHESIS_EXAMPLES=500 runs more examples (and slower) when hunting."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import string
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hostile_support import LogView, bounded, exchange, http_request
from support import apoll

from uploadsrv.config import LimitsConfig
from uploadsrv.errors import UploadError
from uploadsrv.multipart import MultipartForm, display_name


TCHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
BCHARS = string.ascii_letters + string.digits + "'()+_,-./:="  # '?' too, below; and space
ATTR_CHARS = string.ascii_letters + string.digits + "!#$&+-.^_`|~"


@dataclass(frozen=True)
class Form:
    """A generated form: the request's Content-Type, its body, and what must be stored."""

    content_type: str
    boundary: str
    body: bytes
    filename: str
    fields: dict[str, str]


boundaries = st.builds(lambda body, last: body + last, st.text(BCHARS + "? ", max_size=69),
                       st.sampled_from(BCHARS + "?"))
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=30)
padding = st.text(" \t", max_size=4).map(str.encode)


def case(text: str, style: int) -> str:
    return (text, text.lower(), text.upper(), text.swapcase())[style]


@st.composite
def content_types(draw: st.DrawFn, boundary: str) -> str:
    token = all(char in TCHARS for char in boundary)
    value = boundary if token and draw(st.booleans()) else '"' + boundary + '"'
    params = [f"{case('boundary', draw(st.integers(0, 3)))}={value}"]
    if draw(st.booleans()):
        params.insert(draw(st.integers(0, 1)), "charset=utf-8")
    return case("multipart/form-data", draw(st.integers(0, 3))) + "".join(f"; {param}" for param in params)


@st.composite
def filename_params(draw: st.DrawFn, name: str) -> tuple[str, str | None]:
    """Content-Disposition parameters carrying `name`, and the name the server must take."""
    encoded = quote(name.encode(), safe=ATTR_CHARS)
    style = draw(st.sampled_from(["quoted", "rfc5987", "both", "sections", "token", "none"]))
    if style == "token" and name and all(char in TCHARS for char in name):
        return f"; filename={name}", name
    if style == "rfc5987":
        return f"; filename*=UTF-8'{draw(st.sampled_from(['', 'en', 'de-CH']))}'{encoded}", name
    if style == "both" and encoded:
        # filename* first: RFC 6266 takes it wherever it is, the parser takes the first.
        return f"; filename*=utf-8''{encoded}; filename=\"fallback.mp3\"", name
    if style == "sections" and encoded:
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(encoded) - 1)), max_size=3)))
        pieces = [piece for piece in (encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)])) if piece]
        if all(not _splits_escape(encoded, cut) for cut in cuts):
            return "".join(f"; filename*{i}*={'UTF-8' + chr(39) * 2 if i == 0 else ''}{piece}"
                           for i, piece in enumerate(pieces)), name
    if style == "none":
        return "", None
    return '; filename="' + name.replace("\\", "\\\\").replace('"', '\\"') + '"', name


def _splits_escape(encoded: str, cut: int) -> bool:
    return "%" in encoded[max(0, cut - 2):cut]


@st.composite
def part_headers(draw: st.DrawFn, disposition: str) -> str:
    lines = [f"{case('Content-Disposition', draw(st.integers(0, 3)))}: {disposition}"]
    if draw(st.booleans()):
        lines.append(f"{case('Content-Type', draw(st.integers(0, 3)))}: audio/mpeg")
    for index in range(draw(st.integers(0, 2))):
        lines.append(f"X-Extra-{index}: {draw(st.text(string.printable.strip(), max_size=20))}")
    order = draw(st.permutations(lines))
    return "".join(line + "\r\n" for line in order)


@st.composite
def forms(draw: st.DrawFn, mp3: bytes) -> Form:
    boundary = draw(boundaries)
    delimiter = b"\r\n--" + boundary.encode()
    params, filename = draw(filename_params(draw(names)))
    file_part = (draw(part_headers(f'form-data; name="file"{params}')), mp3)
    fields: dict[str, str] = {}
    parts = [file_part]
    for index in range(draw(st.integers(0, 3))):
        value = draw(st.binary(max_size=40))
        name = f"field{index}"
        fields[name] = value.decode("utf-8", errors="replace")
        parts.append((draw(part_headers(f'form-data; name="{name}"')), value))
    parts = draw(st.permutations(parts))
    preamble = draw(st.one_of(st.just(b""), st.binary(max_size=60)))
    epilogue = draw(st.one_of(st.just(b""), st.binary(max_size=60)))
    body = preamble + b"\r\n" if preamble else b""
    for headers, content in parts:
        body += b"--" + boundary.encode() + b"\r\n" + headers.encode() + b"\r\n" + content + b"\r\n"
    body += b"--" + boundary.encode() + b"--" + draw(padding) + (b"\r\n" + epilogue if epilogue or draw(st.booleans()) else b"")
    # The boundary must not occur where it is not a delimiter (the sender's duty).
    if preamble:
        assume((b"\r\n" + preamble + delimiter).find(delimiter) == 2 + len(preamble))
    assume(all(delimiter not in b"\r\n" + content for _, content in parts))
    return Form(draw(content_types(boundary)), boundary, body, display_name(filename), fields)


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(data)), max_size=12).map(
        lambda cuts: [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)])])


@bounded()
@given(data=st.data())
async def test_generated_valid_forms_store_byte_exact_files(start, caplog, mp3: bytes, data: st.DataObject) -> None:
    server = await start()
    form = data.draw(forms(mp3))
    request = http_request("POST", data.draw(st.sampled_from(["/upload", "/upload-multiple"])),
                           {"Content-Type": form.content_type}, form.body)
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, data.draw(splits(request)))
    assert response.status == 201, (response.body[:300], form)
    record = response.json()
    record = record["files"][0] if "files" in record else record
    assert (record["sha256"], record["size"]) == (hashlib.sha256(mp3).hexdigest(), len(mp3))
    assert record["filename"] == form.filename
    assert record["fields"] == form.fields
    assert server.temp() == []
    assert not logs.at_least(logging.WARNING)


TOKENS = [b"\r\n", b"\r", b"\n", b"--", b"\x00", b'"', b"\\", b";", b"*", b"'", b"%", b"%zz", b"\xff\xfe", b" ",
          b"Content-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n", b"filename*=undefined''x",
          b"\r\n\r\n", b"=", b"\t", "\u202e".encode(), b"Content-Transfer-Encoding: base64\r\n"]


@st.composite
def mutated(draw: st.DrawFn, form: Form) -> tuple[str, bytes]:
    body = bytearray(form.body)
    content_type = form.content_type
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["insert", "delete", "flip", "duplicate", "truncate", "content_type"]))
        if kind == "insert":
            body[at:at] = draw(st.sampled_from(TOKENS + [b"--" + form.boundary.encode()]))
        elif kind == "delete":
            del body[at:at + draw(st.integers(1, 8))]
        elif kind == "flip" and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "duplicate":
            body[at:at] = body[max(0, at - draw(st.integers(1, 80))):at]
        elif kind == "truncate":
            del body[at:]
        elif kind == "content_type":
            cut = draw(st.integers(0, len(content_type)))
            insert = draw(st.sampled_from(["", ";", "*", "'", '"', "boundary*=undefined''x; ", " ", "\\", "=",
                                           "boundary=other; ", "\u202e"]))
            content_type = content_type[:cut] + insert + content_type[cut + draw(st.integers(0, 3)):]
    return content_type, bytes(body)


@bounded()
@given(data=st.data())
async def test_mutated_forms_get_json_answers_no_5xx_no_traceback_no_leftover(start, caplog, mp3: bytes,
                                                                               data: st.DataObject) -> None:
    server = await start()
    form = data.draw(forms(mp3[:600]))
    content_type, body = data.draw(mutated(form))
    chunked = data.draw(st.booleans())
    headers = {"Content-Type": content_type, **({"Transfer-Encoding": "chunked"} if chunked else {})}
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked and body else b"0\r\n\r\n" if chunked else body
    request = http_request("POST", "/upload", headers, payload, content_length=not chunked)
    if not body and not chunked:
        request = request.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n", 1)
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, data.draw(splits(request)))
    assert response.status < 500, response.body[:300]
    if response.status >= 400:
        response.error()
    assert server.temp() == []
    await apoll(lambda: len(logs.access()) == 1, timeout=5)  # the request's lines are all out
    assert not [r for r in logs.records if r.exc_info or r.levelno >= logging.ERROR]
    assert all("\n" not in r.getMessage() for r in logs.records)


class RecordingSink:
    """A FileSink that keeps what it was given, and checks the order of its calls."""

    def __init__(self) -> None:
        self.files: list[tuple[str, bytes]] = []
        self.open = False

    async def start_file(self, filename: str) -> None:
        assert not self.open
        self.files.append((filename, b""))
        self.open = True

    async def file_data(self, chunk: bytes) -> None:
        assert self.open and chunk
        name, data = self.files[-1]
        self.files[-1] = (name, data + chunk)

    async def end_file(self) -> None:
        assert self.open
        self.open = False


def read_form(content_type: str, pieces: list[bytes], *, declared: bool) -> object:
    """What MultipartForm makes of `pieces`: (files, fields), or the refusal's code
    ("cut off" for a body that ended too soon)."""
    sink = RecordingSink()
    limits = LimitsConfig(max_fields=4, max_field_size=64, max_files_per_request=2)

    async def run() -> object:
        form = MultipartForm(content_type, file_fields=("file", "files"), max_files=2, limits=limits, sink=sink,
                             body_length=sum(map(len, pieces)) if declared else None)
        for piece in pieces:
            await form.feed(piece)
        form.finish()
        assert not sink.open
        return sink.files, form.fields

    try:
        return asyncio.run(run())
    except UploadError as error:
        return "cut off" if str(error).startswith("the body ended") else error.code


def same_reading(one: object, other: object) -> bool:
    """The same files and fields, or the same refusal. But the parser hands content over
    when a delimiter comes or when enough is pending at a chunk's end (the amount depends
    on the chunks): a body cut off while content is pending may, in another chunking,
    first have that content break a field's limit or begin with the boundary."""
    return one == other or ("cut off" in (one, other)
                            and {one, other} - {"cut off"} <= {"field_too_large", "malformed_multipart"})


@bounded(3)
@given(data=st.data())
def test_the_form_reads_the_same_form_whatever_the_chunking(data: st.DataObject) -> None:
    form = data.draw(forms(b"ID3\x04\x00" + bytes(range(256)) * 2))
    content_type, body = data.draw(st.one_of(st.just((form.content_type, form.body)), mutated(form)))
    whole = read_form(content_type, [body], declared=True)
    if (content_type, body) == (form.content_type, form.body):
        assert whole == ([(form.filename, b"ID3\x04\x00" + bytes(range(256)) * 2)], form.fields), whole
    # streaming-form-data 2.1 keeps a partial match of its close delimiter over skipped
    # content: with the boundary in content, the chunking decides where it sees the end.
    dash = b"--" + form.boundary.encode()
    rest = body.replace(b"\r\n" + dash + b"\r\n", b"").replace(b"\r\n" + dash + b"--", b"").removeprefix(dash)
    assume(dash not in rest and form.boundary.encode() + b"--" not in rest)
    assert same_reading(read_form(content_type, data.draw(splits(body)), declared=False), whole)
    assert same_reading(read_form(content_type, [bytes([byte]) for byte in body], declared=True), whole)


@pytest.mark.parametrize("pieces", [1, 2, "bytes"])
def test_a_blank_line_after_a_later_delimiter_is_refused_however_the_body_is_chunked(pieces: object) -> None:
    """streaming-form-data 2.1 reads the byte after a delimiter twice when both come in
    one chunk, so it refuses a part whose header block begins with a blank line; when the
    delimiter ended a chunk, it would skip the blank line and read the part from the
    headers after it. The form never ends a piece at a delimiter's LF (pieces.py), so the
    answer does not depend on the chunking."""
    content = b"ID3\x04\x00" + bytes(range(256))
    head = b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--B\r\n'
    rest = b'\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n' + content + b"\r\n--B--\r\n"
    body = head + rest
    chunks = {1: [body], 2: [head, rest], "bytes": [bytes([byte]) for byte in body]}[pieces]  # type: ignore[index]
    assert read_form("multipart/form-data; boundary=B", chunks, declared=True) == "malformed_multipart"


@pytest.mark.parametrize("content", [b"-", b"--", b"---", b"-x", b"--x", b"-B--"])
def test_content_that_begins_like_the_close_delimiter_is_read_whatever_the_chunking(content: bytes) -> None:
    """After a delimiter the parser keeps a stale CRLF matched towards the close
    delimiter: a piece ending in such content's first bytes made it fail ("internal
    errors") on these valid forms."""
    file = b"ID3\x04\x00" + bytes(range(256))
    body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n' + file
            + b'\r\n--B\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + content + b"\r\n--B--\r\n")
    expected = ([("a.mp3", file)], {"note": content.decode()})
    start = body.index(b'"note"\r\n\r\n') + 10
    for cut in range(start - 3, start + len(content) + 3):
        assert read_form("multipart/form-data; boundary=B", [body[:cut], body[cut:]], declared=False) == expected, cut
    assert read_form("multipart/form-data; boundary=B", [bytes([byte]) for byte in body], declared=True) == expected
