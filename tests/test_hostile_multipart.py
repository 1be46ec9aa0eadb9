"""Hostile and unusual multipart bodies over a raw socket against the real app: client
faults are the contract's 400 (never a 500), legal RFC 2046 bodies are accepted where
streaming-form-data (the parser) allows it, bodies two parsers could read differently are
refused where our checks around the parser can see them, and each leaves nothing behind,
logs no traceback and leaves /health fast.

What the parser reads its own way and our checks cannot see (it hides the raw part
headers and delimiter lines) is pinned down in the `library_reading` tests: the answer
is a 201 with the bytes and name stated there, or a JSON 400, never a 5xx. Each such
case is listed in docs/SECURITY.md; a change in the library fails these tests."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hostile_support import LogView, RawResponse, assert_health_fast, exchange, http_request, multipart_request

from uploadsrv.multipart import display_name

FILE_HEADERS = 'Content-Disposition: form-data; name="file"; filename="a.mp3"\r\nContent-Type: audio/mpeg\r\n'


def multipart(boundary: str, *parts: tuple[str, bytes], preamble: bytes = b"", padding: bytes = b"",
              epilogue: bytes = b"") -> bytes:
    """A body from (header lines, content) parts, with an optional preamble, transport
    padding after every delimiter, and epilogue."""
    dash = b"--" + boundary.encode()
    body = preamble + b"\r\n" if preamble else b""
    for headers, content in parts:
        body += dash + padding + b"\r\n" + headers.encode() + b"\r\n" + content + b"\r\n"
    return body + dash + b"--" + padding + (b"\r\n" + epilogue if epilogue else b"\r\n")


async def refused(start: Any, caplog: Any, request: bytes, status: int = 400,
                  code: str = "malformed_multipart") -> dict[str, Any]:
    """Send `request` to a fresh server; check the refusal and everything around it."""
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, request)
    error = response.error()
    assert (response.status, error["code"]) == (status, code), error
    server.assert_nothing_left()
    await logs.assert_quiet(access_status=status)
    await assert_health_fast(server.port)
    return error


async def stored(start: Any, caplog: Any, request: bytes, content: bytes) -> tuple[RawResponse, Any]:
    """Send `request`; check it stored exactly `content` and logged nothing loud."""
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, request)
    assert response.status == 201, response.body[:300]
    record = response.json()
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["size"] == len(content)
    assert server.stored() != [] and server.temp() == []
    await logs.assert_quiet(access_status=201)
    return response, record


# -- 1. client input that answered 500 -------------------------------------------------

@pytest.mark.parametrize("value", ["undefined''x.mp3", "idna''x.mp3", "punycode''x.mp3", "unicode-escape''%5Cx.mp3",
                                   "utf-16''x.mp3"])
async def test_a_charset_that_cannot_decode_the_filename_is_malformed(start, caplog, mp3: bytes, value: str) -> None:
    headers = f"Content-Disposition: form-data; name=\"file\"; filename*={value}\r\n"
    await refused(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"))


@pytest.mark.parametrize("value, shown", [
    ("utf-7''x.mp3", "x.mp3"),
    ("unicode-escape''x.mp3", "x.mp3"),
    ("rot13''x.mp3", "x.mp3"),  # no text codec: read as ASCII
    ("x-nope''x.mp3", "x.mp3"),  # no codec at all: read as ASCII
    ("utf-7''evil%2BIC4-gpj.mp3", "evilgpj.mp3"),  # U+202E in UTF-7: stripped like any other
    ("unicode-escape''%5Cu202egpj.mp3", "gpj.mp3"),
])
async def test_library_reading_a_charset_python_can_decode_gives_a_safe_name(start, caplog, mp3: bytes, value: str,
                                                                             shown: str) -> None:
    """The parser (Python's email package) decodes any codec Python has; the name is
    display-only, and what it decodes to goes through display_name like any other."""
    headers = f"Content-Disposition: form-data; name=\"file\"; filename*={value}\r\n"
    _, record = await stored(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), mp3)
    assert record["filename"] == shown


@pytest.mark.parametrize("parameter", ["boundary*=undefined''B", "boundary*=utf-8''B", "boundary*0=B"])
async def test_an_rfc2231_boundary_in_the_content_type_is_malformed(start, caplog, mp3: bytes,
                                                                     parameter: str) -> None:
    body = multipart("B", (FILE_HEADERS, mp3))
    request = http_request("POST", "/upload", {"Content-Type": f"multipart/form-data; {parameter}"}, body)
    await refused(start, caplog, request)


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; boundary", "multipart/form-data; boundary=", "multipart/form-data; ; boundary=B;;x",
    'multipart/form-data; boundary="B', "multipart/form-data; boundary=B; boundary=C",
])
async def test_a_content_type_parameter_without_a_value_is_malformed(start, caplog, mp3: bytes,
                                                                     content_type: str) -> None:
    request = http_request("POST", "/upload", {"Content-Type": content_type}, multipart("B", (FILE_HEADERS, mp3)))
    await refused(start, caplog, request)


@pytest.mark.parametrize("disposition, code", [
    ('form-data; name="file"; filename*', "malformed_multipart"),
    ('form-data; name; filename="a.mp3"', "missing_file"),  # no name: the parser skips the part
])
async def test_a_disposition_parameter_the_parser_cannot_use_is_refused(start, caplog, mp3: bytes, disposition: str,
                                                                        code: str) -> None:
    headers = f"Content-Disposition: {disposition}\r\n"
    await refused(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), code=code)


@pytest.mark.parametrize("disposition", [
    'form-data; name="file"; filename="a\x00.mp3"',
    "form-data; name=\"file\"; filename*=UTF-8''a%00.mp3",
    "form-data; name=\"file\"; filename*=UTF-8''a%0D%0Ab.mp3",
])
async def test_nul_cr_or_lf_in_a_file_name_is_malformed(start, caplog, mp3: bytes, disposition: str) -> None:
    """A C parser in front ends the name at NUL; CR and LF frame headers."""
    headers = f"Content-Disposition: {disposition}\r\n"
    error = await refused(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"))
    assert "NUL" in error["message"]


async def test_nul_in_a_field_name_is_malformed(start, caplog, mp3: bytes) -> None:
    body = multipart("B", ('Content-Disposition: form-data; name="a\x00b"\r\n', b"v"), (FILE_HEADERS, mp3))
    await refused(start, caplog, multipart_request(body, "B"))


@pytest.mark.parametrize("filename, shown", [
    ("evil\u202egpj.mp3", "evilgpj.mp3"),  # RIGHT-TO-LEFT OVERRIDE
    ("a\u2066b\u2069.mp3", "ab.mp3"),  # isolates
    ("a\u200eb\u200f.mp3", "ab.mp3"),  # LRM, RLM
    ("\ufeffsong.mp3", "song.mp3"),  # BOM
    ("a\u2028b.mp3", "ab.mp3"),  # LINE SEPARATOR
])
async def test_format_characters_are_stripped_from_the_stored_name(start, caplog, mp3: bytes, filename: str,
                                                                   shown: str) -> None:
    headers = f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
    _, record = await stored(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), mp3)
    assert record["filename"] == shown


async def test_an_encoded_bidi_override_is_stripped_too(start, caplog, mp3: bytes) -> None:
    headers = "Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''evil%E2%80%AEgpj.mp3\r\n"
    _, record = await stored(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), mp3)
    assert record["filename"] == "evilgpj.mp3"


@pytest.mark.parametrize("raw, shown", [
    ("evil\u202egpj.mp3", "evilgpj.mp3"),
    ("x\u00ady.mp3", "xy.mp3"),  # soft hyphen (Cf)
    ("x\u0085y.mp3", "xy.mp3"),  # C1 control
    ("x\u200dy.mp3", "xy.mp3"),  # zero-width joiner
    ("x%E2%80%AEy.mp3", "xy.mp3"),  # percent-encoded override
    ("Привет мир.mp3", "Привет мир.mp3"),
    ("日本語.mp3", "日本語.mp3"),
])
def test_display_name_strips_invisible_characters(raw: str, shown: str) -> None:
    assert display_name(raw) == shown


@pytest.mark.parametrize("disposition, shown", [
    ("filename*=UTF-8''%E2%82%AC%20rates.mp3", "€ rates.mp3"),
    ("filename*=iso-8859-1'fr'caf%E9.mp3", "café.mp3"),
    ("filename*=UTF-8''r%C3%A9el.mp3; filename=\"fallback.mp3\"", "réel.mp3"),
    ("filename*0*=UTF-8''%E2%82%AC; filename*1=\" rates\"; filename*2=.mp3", "€ rates.mp3"),
    ("filename=\"say \\\"hi\\\".mp3\"", 'say "hi".mp3'),
    ("filename=\"Привет.mp3\"", "Привет.mp3"),
])
async def test_rfc2231_and_5987_file_names_are_decoded(start, caplog, mp3: bytes, disposition: str,
                                                       shown: str) -> None:
    headers = f'Content-Disposition: form-data; name="file"; {disposition}\r\n'
    _, record = await stored(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), mp3)
    assert record["filename"] == shown


# -- 2. legal bodies ---------------------------------------------------------------------

@pytest.mark.parametrize("boundary, content_type", [
    ("it's", "multipart/form-data; boundary=it's"),
    ("a'b'c", "multipart/form-data; boundary=a'b'c"),
    ("with space:and=(more)?", 'multipart/form-data; boundary="with space:and=(more)?"'),
    ("x" * 70, "multipart/form-data; boundary=" + "x" * 70),
])
async def test_every_rfc2046_boundary_is_accepted(start, caplog, mp3: bytes, boundary: str, content_type: str) -> None:
    request = http_request("POST", "/upload", {"Content-Type": content_type}, multipart(boundary, (FILE_HEADERS, mp3)))
    await stored(start, caplog, request, mp3)


async def test_a_preamble_before_the_first_delimiter_is_accepted(start, caplog, mp3: bytes) -> None:
    body = multipart("B", (FILE_HEADERS, mp3), preamble=b"This is a multi-part message in MIME format.\r\n--not B")
    await stored(start, caplog, multipart_request(body, "B"), mp3)


async def test_a_preamble_sent_a_byte_at_a_time_is_accepted(start, caplog, mp3: bytes) -> None:
    preamble = b"This is a multi-part message in MIME format.\r\n-"
    body = multipart("B", (FILE_HEADERS, mp3), preamble=preamble)
    request = multipart_request(body, "B")
    head = len(request) - len(body)
    pieces = [request[:head], *(bytes([byte]) for byte in body[:len(preamble) + 8]), request[head + len(preamble) + 8:]]
    server = await start()
    response = await exchange(server.port, pieces)
    assert response.status == 201, response.body[:300]


async def test_transport_padding_after_the_close_delimiter_is_accepted(start, caplog, mp3: bytes) -> None:
    body = multipart("B", ('Content-Disposition: form-data; name="note"\r\n', b"hi"), (FILE_HEADERS, mp3))
    body = body.replace(b"--B--\r\n", b"--B-- \t  \r\nepilogue")
    _, record = await stored(start, caplog, multipart_request(body, "B"), mp3)
    assert record["fields"] == {"note": "hi"}


async def test_library_reading_transport_padding_after_the_first_delimiter_is_malformed(start, caplog,
                                                                                       mp3: bytes) -> None:
    """RFC 2046 allows spaces and tabs after any delimiter; the parser refuses them."""
    body = multipart("B", ('Content-Disposition: form-data; name="note"\r\n', b"hi"), (FILE_HEADERS, mp3),
                     padding=b" \t  ")
    await refused(start, caplog, multipart_request(body, "B"))


async def test_an_epilogue_is_accepted(start, caplog, mp3: bytes) -> None:
    body = multipart("B", (FILE_HEADERS, mp3), epilogue=b"This is the epilogue.\r\n--B--\r\n")
    _, record = await stored(start, caplog, multipart_request(body, "B"), mp3)
    assert record["filename"] == "a.mp3"


async def test_library_reading_folded_part_headers_are_not_joined(start, caplog, mp3: bytes) -> None:
    """The parser reads each header line alone: the first line has no name, so the part
    is skipped and the form has no file."""
    headers = 'Content-Disposition: form-data;\r\n name="file";\r\n\tfilename="folded.mp3"\r\n'
    await refused(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), code="missing_file")


# -- 3. bodies two parsers read differently ---------------------------------------------

async def test_a_close_delimiter_reusing_the_previous_lines_crlf_is_malformed(start, caplog, mp3: bytes) -> None:
    """`--B` CRLF `--B--`: a parser that looks for CRLF--B-- anywhere sees the end of the
    form; RFC 2046 sees a second part whose headers start with the boundary."""
    body = b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n" + mp3 + b"\r\n--B\r\n--B--\r\n"
    await refused(start, caplog, multipart_request(body, "B"))


@pytest.mark.parametrize("headers, code", [
    (FILE_HEADERS + 'Content-Disposition: form-data; name="other"\r\n', "malformed_multipart"),  # given twice
    (FILE_HEADERS + 'Content-Disposition: form-data; name="file"; filename="b.mp3"\r\n', "malformed_multipart"),
    ('Content-Disposition: attachment; name="file"; filename="a.mp3"\r\n', "malformed_multipart"),
    # The parser takes the first name: the file is in a part it does not take files from.
    ('Content-Disposition: form-data; name="other"; name="file"; filename="a.mp3"\r\n', "missing_file"),
    ("Content-Disposition: form-data; name=\"x\"; name*=UTF-8''file; filename=\"a.mp3\"\r\n", "missing_file"),
    # Not a Content-Disposition to the parser: a part without a name, skipped.
    ('Content-Disposition : form-data; name="file"; filename="a.mp3"\r\n', "missing_file"),
])
async def test_ambiguous_part_headers_are_refused(start, caplog, mp3: bytes, headers: str, code: str) -> None:
    await refused(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), code=code)


@pytest.mark.parametrize("headers, shown", [
    ('Content-Disposition: form-data; name="file"; filename\r\n', ""),
    ('Content-Disposition: form-data; name="file"; filename=\r\n', ""),
    ('Content-Disposition: form-data; name="file"; ; filename="a.mp3"\r\n', "a.mp3"),
    ('Content-Disposition: form-data; name="file"; filename="a.mp3\r\n', "a.mp3"),  # no closing quote
    # The first of two filename parameters, where RFC 6266 says filename* wins.
    ("Content-Disposition: form-data; name=\"file\"; filename=\"fallback.mp3\"; filename*=UTF-8''r%C3%A9el.mp3\r\n",
     "fallback.mp3"),
    # A backslash escapes any character: a Windows path loses its folders' separators.
    ('Content-Disposition: form-data; name="file"; filename="C:\\Users\\x\\song.mp3"\r\n', "C:Usersxsong.mp3"),
    ("Content-Disposition: form-data; name=\"file\"; filename*0=a; filename*2=b\r\n", "a"),  # a gap
    (FILE_HEADERS + "Content-Transfer-Encoding: base64\r\n", "a.mp3"),  # stored as sent, never decoded
    (FILE_HEADERS + "no colon here\r\n", "a.mp3"),
    ("--B: x\r\n" + FILE_HEADERS, "a.mp3"),  # a header line that starts with the boundary
    ("\r\n" + FILE_HEADERS, "a.mp3"),  # a blank line first: RFC 2046 reads content from there
])
async def test_library_reading_of_part_headers_stores_the_file_under_the_name_it_read(start, caplog, mp3: bytes,
                                                                                    headers: str, shown: str) -> None:
    _, record = await stored(start, caplog, multipart_request(multipart("B", (headers, mp3)), "B"), mp3)
    assert record["filename"] == shown


@pytest.mark.parametrize("body, code", [
    (b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n<mp3>\r\n--B--X\r\n", "malformed_multipart"),  # junk on the close line
    (b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n<mp3>\r\n--B--\r", "malformed_multipart"),  # a bare CR ends it
    (b"--B\n" + FILE_HEADERS.encode().replace(b"\r\n", b"\n") + b"\n<mp3>\n--B--\n", "malformed_multipart"),  # LF only
    (b"--B \r" + FILE_HEADERS.encode() + b"\r\n<mp3>\r\n--B--\r\n", "malformed_multipart"),  # bare CR after padding
    (b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n<mp3>\r\n--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n",
     "malformed_multipart"),  # the last part has no name
])
async def test_delimiter_lines_that_are_not_rfc2046_are_malformed(start, caplog, mp3: bytes, body: bytes,
                                                                 code: str) -> None:
    await refused(start, caplog, multipart_request(body.replace(b"<mp3>", mp3), "B"), code=code)


@pytest.mark.parametrize("after", [
    b"\r\n--BX\r\n",  # a line that starts with the boundary: RFC 2046 makes it a delimiter
    b'\r\n--B \r\nContent-Disposition: form-data; name="note"\r\n\r\nhi',  # a padded delimiter
])
async def test_library_reading_of_a_line_starting_with_the_boundary_is_content(start, caplog, mp3: bytes,
                                                                              after: bytes) -> None:
    """The parser's delimiter is exactly CRLF --B CRLF: any other line starting with the
    boundary stays in the file, with what follows it up to the next delimiter."""
    body = b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n" + mp3 + after + b"\r\n--B--\r\n"
    _, record = await stored(start, caplog, multipart_request(body, "B"), mp3 + after)
    assert record["fields"] == {}


async def test_library_reading_a_part_without_a_name_is_skipped(start, caplog, mp3: bytes) -> None:
    body = multipart("B", ("Content-Disposition: form-data\r\n", b"skipped"), (FILE_HEADERS, mp3))
    _, record = await stored(start, caplog, multipart_request(body, "B"), mp3)
    assert record["fields"] == {}


@pytest.mark.parametrize("body", [
    b'--B\r\nContent-Disposition: form-data; name="empty"\r\n\r\n--B\r\n' + FILE_HEADERS.encode() + b"\r\n<mp3>\r\n--B--\r\n",
    b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n--B--\r\n",
    b"--B\r\n" + FILE_HEADERS.encode() + b"\r\n<mp3>\r\n--B\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n--B--\r\n",
])
async def test_an_empty_part_sharing_its_blank_line_with_the_delimiter_is_malformed(start, caplog, mp3: bytes,
                                                                                   body: bytes) -> None:
    """`name: v` CRLF CRLF `--B`: RFC 2046 (body-part := headers [CRLF *OCTET]) reads an
    empty part and a delimiter; the parser reads content that begins with the boundary.
    The two readings differ, so the form is refused."""
    await refused(start, caplog, multipart_request(body.replace(b"<mp3>", mp3), "B"))

