"""Hostile tus requests over a raw socket against the real app: headers the fuzzers
found are the contract's 4xx JSON with no traceback and nothing left behind, and a
client gone mid-PATCH is one outcome line and a 499 in the access log."""

from __future__ import annotations

import asyncio

import pytest
from hostile_support import LogView, assert_health_fast, exchange, http_request
from support import apoll

from uploadsrv.appkeys import ACTIVE_UPLOADS


@pytest.mark.parametrize("concat", [
    "final;https://h[files/def",  # urlsplit: "Invalid IPv6 URL" (ValueError)
    "final;/files/abc http://[::1/files/x",
    "final;http://h]/files/x",
])
async def test_an_upload_url_python_cannot_split_is_an_invalid_header(start, caplog, concat: str) -> None:
    server = await start()
    logs = LogView(caplog)
    logs.mark()
    request = http_request("POST", "/files", {"Tus-Resumable": "1.0.0", "Upload-Concat": concat,
                                              "Content-Length": "0"})
    response = await exchange(server.port, request)
    error = response.error()
    assert (response.status, error["code"]) == (400, "invalid_header"), error
    await logs.assert_quiet(access_status=400)
    server.assert_nothing_left()
    await assert_health_fast(server.port)


async def test_a_client_gone_mid_patch_is_one_outcome_line_and_499_without_traceback(start, caplog, mp3: bytes) -> None:
    server = await start()
    created = await exchange(server.port, http_request("POST", "/files", {
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(mp3)), "Content-Length": "0"}))
    assert created.status == 201
    path = "/files/" + created.headers["location"].rsplit("/files/", 1)[1]
    logs = LogView(caplog)
    logs.mark()
    head = http_request("PATCH", path, {"Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                                        "Content-Type": "application/offset+octet-stream",
                                        "Content-Length": str(len(mp3))})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + mp3[: len(mp3) // 2])
    await writer.drain()
    uploads = server.client.server.app[ACTIVE_UPLOADS]
    await apoll(lambda: uploads.requests == 1)  # the PATCH is reading its body
    writer.close()
    await logs.assert_client_abort()
    await assert_health_fast(server.port)
