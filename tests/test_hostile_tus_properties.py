"""Property-based tests of tus headers over a raw socket (hypothesis, bounded and
derandomized): generated header sets (lengths, offsets, metadata, checksums, concat
lists, versions), valid or not, against POST, PATCH and HEAD never get a 5xx, a
non-JSON refusal, a traceback in the log, or a leftover from a refused creation."""

from __future__ import annotations

import base64
import hashlib
import logging
import string
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from hostile_support import LogView, RawResponse, bounded, exchange, http_request
from support import apoll

OFFSET_STREAM = "application/offset+octet-stream"
# Header text a client can send: no controls (aiohttp refuses those as framing, tested
# in test_hostile_http), anything else, ASCII-heavy.
header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=24)
odd_numbers = st.sampled_from(["-1", "+5", " 5", "5 ", "0x10", "1e3", "", "99999999999999999999999", "١٢", "5,5",
                               "0005", "18446744073709551616", "NaN"])


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` four times in five: enough requests must pass one rule to meet the next."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 0 else usual)


numbers = mostly(st.integers(0, 5000).map(str), st.one_of(odd_numbers, header_text))
versions = mostly(st.just("1.0.0"), st.one_of(st.sampled_from(["0.2.2", "1.0", "", "1.0.0, 0.2.2", " 1.0.0"]),
                                             header_text))
b64 = st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode())


@st.composite
def metadata(draw: st.DrawFn) -> str:
    pairs = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.one_of(st.sampled_from(["filename", "name", "filetype", "x"]),
                             st.text(string.printable.strip(), min_size=0, max_size=8)))
        value = draw(st.one_of(b64, st.just(""), header_text, st.just("\u202e".encode().hex())))
        pairs.append(draw(st.sampled_from([f"{key} {value}", key, f"{key}  {value}", f" {key} {value} "])))
    return draw(st.sampled_from([",", ", ", " ,"])).join(pairs)


@st.composite
def checksums(draw: st.DrawFn, body: bytes = b"") -> str:
    algorithm = draw(st.sampled_from(["sha1", "sha256", "md5", "SHA1", "crc32", "", "sha256 sha1"]))
    digest = hashlib.new(algorithm, body).digest() if algorithm in ("sha1", "sha256", "md5") else b""
    value = draw(st.one_of(st.just(base64.b64encode(digest).decode()), b64, header_text))
    return f"{algorithm}{draw(st.sampled_from([' ', '  ', '']))}{value}"


concat = st.one_of(st.sampled_from(["partial", "final", "final;", "Partial", "final; "]),
                   st.lists(st.one_of(st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=22)
                                      .map(lambda i: f"/files/{i}"), header_text), max_size=3)
                   .map(lambda urls: "final;" + " ".join(urls)))


@st.composite
def creation_headers(draw: st.DrawFn, mp3: bytes) -> dict[str, Any]:
    headers = {"Tus-Resumable": draw(versions),
               "Upload-Length": draw(mostly(st.just(str(len(mp3))), numbers))}
    body = draw(mostly(st.just(b""), st.integers(0, len(mp3)).map(lambda n: mp3[:n])))
    if body or draw(st.integers(0, 9)) == 0:
        headers["Content-Type"] = draw(mostly(st.just(OFFSET_STREAM), header_text))
    headers["body"] = body
    optional = draw(st.fixed_dictionaries({}, optional={
        "Upload-Defer-Length": st.one_of(st.just("1"), numbers), "Upload-Metadata": metadata(),
        "Upload-Checksum": checksums(body), "Upload-Concat": concat}))
    for name, value in optional.items():
        if name == "Upload-Defer-Length" and draw(st.booleans()):
            del headers["Upload-Length"]
        headers[name] = value
    return headers


def patch_headers(mp3: bytes, offset: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.integers(offset, len(mp3)).flatmap(lambda end: st.fixed_dictionaries({
        "Tus-Resumable": versions,
        "Upload-Offset": mostly(st.just(str(offset)), numbers),
        "Content-Type": mostly(st.just(OFFSET_STREAM), header_text),
        "body": st.just(mp3[offset:end]),
    }, optional={
        "Upload-Checksum": checksums(mp3[offset:end]), "Upload-Length": numbers,
    }))


async def send(port: int, method: str, path: str, headers: dict[str, Any]) -> RawResponse:
    headers = dict(headers)
    body = headers.pop("body", b"")
    request = http_request(method, path, headers, body)
    if method in ("POST", "PATCH") and not body:
        request = request.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n", 1)
    return await exchange(port, request)


async def check(response: RawResponse, method: str, logs: LogView) -> None:
    event(f"{method} {response.status}")
    assert response.status < 500, (method, response.status, response.body[:300])
    if response.status >= 400 and method != "HEAD":
        response.error()
    await apoll(lambda: any(f'"{method} ' in line for line in logs.access()), timeout=5)
    assert not [r for r in logs.records if r.exc_info or r.levelno >= logging.ERROR]
    assert all("\n" not in r.getMessage() for r in logs.records)


@bounded()
@given(data=st.data())
async def test_generated_tus_header_sets_never_fail_the_server(start, caplog, mp3: bytes, data: st.DataObject) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    before = server.temp()
    created = await send(server.port, "POST", "/files", data.draw(creation_headers(mp3)))
    await check(created, "POST", logs)
    if created.status >= 400:
        assert server.temp() == before
        return
    path = "/files/" + created.headers["location"].rsplit("/files/", 1)[1]
    offset = int(created.headers.get("upload-offset", "0"))
    if offset < len(mp3):
        patched = await send(server.port, "PATCH", path, data.draw(patch_headers(mp3, offset)))
        await check(patched, "PATCH", logs)
    head = await send(server.port, "HEAD", path, {"Tus-Resumable": data.draw(versions)})
    await check(head, "HEAD", logs)
