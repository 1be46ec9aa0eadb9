"""Hostile HTTP below the app, over a raw socket against the real app served as in
production (`http_protocol.make_runner`): every refusal the server can still send is
the contract's JSON, bad framing is one rate-limited warning line (never a traceback),
and a client that goes away mid-upload is its upload's one outcome line and a 499 in
the access log."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from hostile_support import (
    LogView, ServedLikeProduction, assert_health_fast, exchange, http_request, multipart_request, parse_response,
)
from support import apoll, make_config

from uploadsrv.app import create_app

H = "Host: 127.0.0.1\r\nConnection: close\r\n"
UPLOAD = "POST /upload HTTP/1.1\r\n" + H + "Content-Type: multipart/form-data; boundary=B\r\n"
HEALTH = "GET /health HTTP/1.1\r\n" + H

# Requests aiohttp's HTTP parser refuses, one per kind of fault.
BAD_FRAMING = {
    "content_length_with_sign": UPLOAD + "Content-Length: +5\r\n\r\nhello",
    "negative_content_length": UPLOAD + "Content-Length: -1\r\n\r\n",
    "duplicate_content_length": UPLOAD + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "conflicting_content_length": UPLOAD + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "empty_content_length": UPLOAD + "Content-Length: \r\n\r\n",
    "content_length_list": UPLOAD + "Content-Length: 5, 5\r\n\r\nhello",
    "content_length_overflow": UPLOAD + "Content-Length: 99999999999999999999999\r\n\r\n",
    "content_length_and_chunked": UPLOAD + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk_size_not_hex": UPLOAD + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": UPLOAD + "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n",
    "chunk_without_crlf": UPLOAD + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "chunked_not_last": UPLOAD + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "two_transfer_encodings": UPLOAD + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "nul_in_header": HEALTH + "X-Note: a\x00b\r\n\r\n",
    "header_line_over_8k": HEALTH + "X-Note: " + "a" * 9000 + "\r\n\r\n",
    "request_line_over_8k": "GET /" + "a" * 9000 + " HTTP/1.1\r\n" + H + "\r\n",
    "too_many_headers": HEALTH + "".join(f"X-{i}: v\r\n" for i in range(200)) + "\r\n",
    "lowercase_method": "post /upload HTTP/1.1\r\n" + H + "\r\n",
    "unknown_http_version": "GET /health HTTP/1.2\r\n" + H + "\r\n",
    "space_before_colon": "GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    "obsolete_line_folding": HEALTH + "X-Note: a\r\n b\r\n\r\n",
    "bare_lf_line_ends": "GET /health HTTP/1.1\nHost: x\n\n",
    "invalid_header_name": HEALTH + "Bad[Name]: x\r\n\r\n",
    "missing_host": "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    "two_hosts": "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "tls_client_hello": "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + "\x00" * 40,
    "http2_preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "binary_garbage": "\x00\x01\x02\x03\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMING))
async def test_bad_framing_is_a_json_400_and_one_warning_line(start, caplog, name: str) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, BAD_FRAMING[name].encode("latin-1"))
    error = response.error()
    assert (response.status, error["code"]) == (400, "bad_request"), error
    await logs.assert_quiet(access_status=400, warnings=1)
    [warning] = logs.at_least(logging.WARNING)
    assert warning.getMessage().startswith("bad HTTP request from 127.0.0.1: ")
    server.assert_nothing_left()
    await assert_health_fast(server.port)


async def test_bad_framing_after_a_good_request_on_the_same_connection_is_json(start, caplog) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    first = parse_response(head + await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])))
    assert first.status == 200
    writer.write(b"GET /health HTTP/1.1\r\nContent-Length: +1\r\n\r\n")
    response = parse_response(await reader.read())
    writer.close()
    assert (response.status, response.error()["code"]) == (400, "bad_request")
    assert len(logs.access()) == 2
    assert [r.name for r in logs.at_least(logging.WARNING)] == ["uploadsrv.http"]


@pytest.mark.parametrize("path, content_type", [
    ("/upload", "multipart/form-data; boundary=B"),
    ("/files", None),
])
async def test_a_transfer_coding_before_chunked_is_not_implemented(start, caplog, path: str,
                                                                   content_type: str | None) -> None:
    """aiohttp frames `gzip, chunked` as plain chunked and never gunzips: refuse it."""
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    headers = {"Transfer-Encoding": "gzip, chunked", "Tus-Resumable": "1.0.0", "Upload-Length": "5"}
    if content_type:
        headers["Content-Type"] = content_type
    response = await exchange(server.port, http_request("POST", path, headers) + b"5\r\nhello\r\n0\r\n\r\n")
    assert (response.status, response.error()["code"]) == (501, "not_implemented")
    await logs.assert_quiet(access_status=501)
    server.assert_nothing_left()
    await assert_health_fast(server.port)


async def test_chunked_framing_in_http_1_0_is_refused(start, caplog) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    request = (UPLOAD.replace("HTTP/1.1", "HTTP/1.0") + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode()
    response = await exchange(server.port, request)
    assert (response.status, response.error()["code"]) == (400, "bad_request")
    await logs.assert_quiet(access_status=400)


async def test_a_compressed_upload_body_is_unsupported(start, caplog, mp3: bytes) -> None:
    """aiohttp would gunzip it: a filter in front would judge other bytes than we store."""
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, multipart_request(b"--B--\r\n", "B", extra={"Content-Encoding": "gzip"}))
    assert (response.status, response.error()["code"]) == (415, "unsupported_media_type")
    await logs.assert_quiet(access_status=415)
    server.assert_nothing_left()


async def test_a_content_type_aiohttp_cannot_parse_is_a_400_on_any_route(start, caplog) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(server.port, http_request("GET", "/health", {"Content-Type": "text/x; a*=undefined''x"}))
    assert (response.status, response.error()["code"]) == (400, "bad_request")
    await logs.assert_quiet(access_status=400)


@pytest.mark.parametrize("path", ["/health", "/upload", "/files"])
async def test_an_unknown_expectation_is_a_json_417(start, caplog, path: str) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    method = "GET" if path == "/health" else "POST"
    response = await exchange(server.port, http_request(method, path, {"Expect": "200-ok"}))
    assert (response.status, response.error()["code"]) == (417, "expectation_failed")
    await logs.assert_quiet(access_status=417)


async def test_bad_framing_warnings_are_rate_limited_then_counted(aiohttp_client, tmp_path, caplog) -> None:
    client = await aiohttp_client(ServedLikeProduction(create_app(make_config(tmp_path)),
                                                       warnings_per_window=3, warning_window=2.0))
    logs = LogView(caplog)
    logs.mark()
    for _ in range(8):
        response = await exchange(client.server.port, BAD_FRAMING["content_length_with_sign"].encode())
        assert response.status == 400

    def told() -> tuple[list[str], list[int]]:
        messages = [record.getMessage() for record in logs.at_least(logging.WARNING)]
        counts = [int(match.group(1)) for message in messages
                  if (match := re.fullmatch(r"(\d+) more bad requests in the last 2 s were not logged one by one",
                                            message))]
        return [message for message in messages if message.startswith("bad HTTP request")], counts

    await apoll(lambda: len(told()[0]) + sum(told()[1]) == 8, timeout=10)
    one_by_one, summaries = told()
    assert len(one_by_one) <= 3 * (len(summaries) + 1) and summaries  # a window's share, then a count
    assert len(logs.access()) == 8  # the access log still has every request


async def test_a_client_gone_mid_upload_is_one_outcome_line_and_499_without_traceback(start, caplog, mp3: bytes) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    head = multipart_request(b"", "B").replace(b"\r\n\r\n", f"\r\nContent-Length: {10 << 20}\r\n\r\n".encode(), 1)
    head = head.replace(b"Connection: close\r\n", b"")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n' + mp3)
    await writer.drain()
    await apoll(lambda: server.temp() != [])  # the upload is under way
    writer.close()
    await logs.assert_client_abort()
    await apoll(lambda: server.temp() == [])
    server.assert_nothing_left()
    await assert_health_fast(server.port)


async def test_an_exception_below_the_middlewares_is_a_json_500_with_one_traceback(aiohttp_client, tmp_path,
                                                                                  caplog) -> None:
    """Our bug, not the client's: the one case worth a traceback."""
    async def failing_expectation(request: Any) -> None:
        raise RuntimeError("a bug in an expect handler")

    async def never(request: Any) -> Any:
        raise AssertionError("not reached")

    app = create_app(make_config(tmp_path))
    app.router.add_post("/bug", never, expect_handler=failing_expectation)
    client = await aiohttp_client(ServedLikeProduction(app))
    logs = LogView(caplog)
    logs.mark()
    response = await exchange(client.server.port, http_request("POST", "/bug", {"Expect": "100-continue"}))
    assert (response.status, response.error()["code"]) == (500, "internal_error")
    [error] = logs.at_least(logging.WARNING)
    assert (error.name, error.levelname, error.getMessage()) == ("uploadsrv.http", "ERROR", "unhandled error in POST /bug")
    assert error.exc_info is not None
