"""The parser traps: every malformed form is refused with the contract's JSON error and
leaves nothing behind, and the server keeps serving."""

from __future__ import annotations

import io

import pytest
from support import BOUNDARY, FORM_CONTENT_TYPE, form, part

from uploadsrv.multipart import PART_OVERHEAD, display_name


async def post_raw(server, body: bytes, content_type: str = FORM_CONTENT_TYPE, path: str = "/upload"):
    response = await server.client.post(path, data=io.BytesIO(body), headers={"Content-Type": content_type})
    return response.status, await response.json()


async def assert_refused(server, body: bytes, status: int, code: str, **kwargs) -> dict:
    got_status, payload = await post_raw(server, body, **kwargs)
    assert (got_status, payload["error"]["code"]) == (status, code), payload
    assert payload["error"]["status"] == status
    assert payload["error"]["message"]
    server.assert_nothing_left()
    return payload


async def test_truncated_body_is_malformed(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="a.mp3"))
    await assert_refused(server, body[: len(body) // 2], 400, "malformed_multipart")


async def test_missing_closing_boundary_is_malformed(start, mp3: bytes) -> None:
    server = await start()
    await assert_refused(server, form(part("file", mp3, filename="a.mp3"), close=False), 400, "malformed_multipart")


async def test_second_file_part_on_upload_is_too_many_files(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="a.mp3"), part("file", mp3, filename="b.mp3"))
    payload = await assert_refused(server, body, 400, "too_many_files")
    assert "/upload-multiple" in payload["error"]["message"]


async def test_a_file_under_another_name_is_missing_file_naming_that_part(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("attachment", mp3, filename="a.mp3"), part("file", mp3, filename="b.mp3"))
    response = await assert_refused(server, body, 400, "missing_file")
    assert "'attachment'" in response["error"]["message"]


async def test_a_second_file_in_another_part_is_an_unexpected_part(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="b.mp3"), part("attachment", mp3, filename="a.mp3"))
    await assert_refused(server, body, 400, "unexpected_part")


async def test_non_utf8_part_header_is_malformed(start, mp3: bytes) -> None:
    server = await start()
    headers = b'Content-Disposition: form-data; name="file"; filename="caf\xe9.mp3"\r\n'
    await assert_refused(server, form(part("file", mp3, raw_headers=headers)), 400, "malformed_multipart")


async def test_endless_part_headers_are_cut_off(start) -> None:
    server = await start()
    endless = b"--" + BOUNDARY.encode() + b"\r\nX-Filler: " + b"a" * (PART_OVERHEAD * 64)
    payload = await assert_refused(server, endless, 400, "malformed_multipart")
    assert "headers" in payload["error"]["message"]


async def test_wrong_boundary_is_malformed(start, mp3: bytes) -> None:
    server = await start()
    body = form(part("file", mp3, filename="a.mp3"))
    await assert_refused(server, body, 400, "malformed_multipart",
                         content_type="multipart/form-data; boundary=somethingelse")


async def test_missing_boundary_is_malformed(start, mp3: bytes) -> None:
    server = await start()
    await assert_refused(server, form(part("file", mp3, filename="a.mp3")), 400, "malformed_multipart",
                         content_type="multipart/form-data")


async def test_no_file_part_is_missing_file(start) -> None:
    server = await start()
    await assert_refused(server, form(part("description", b"just text")), 400, "missing_file")


async def test_empty_form_is_missing_file(start) -> None:
    server = await start()
    await assert_refused(server, b"--" + BOUNDARY.encode() + b"--\r\n", 400, "missing_file")


async def test_empty_file_part_is_missing_file(start) -> None:
    server = await start()
    await assert_refused(server, form(part("file", b"", filename="empty.mp3")), 400, "missing_file")


async def test_too_many_text_fields_are_refused(start, mp3: bytes) -> None:
    server = await start(limits={"max_fields": 3})
    fields = [part(f"f{i}", b"x") for i in range(4)]
    await assert_refused(server, form(*fields, part("file", mp3, filename="a.mp3")), 400, "too_many_fields")


async def test_a_repeated_field_name_counts_every_time(start, mp3: bytes) -> None:
    server = await start(limits={"max_fields": 3})
    fields = [part("same", b"x") for _ in range(4)]
    await assert_refused(server, form(*fields, part("file", mp3, filename="a.mp3")), 400, "too_many_fields")


async def test_oversized_text_field_is_refused(start, mp3: bytes) -> None:
    server = await start(limits={"max_field_size": 1024})
    body = form(part("description", b"x" * 1025), part("file", mp3, filename="a.mp3"))
    await assert_refused(server, body, 400, "field_too_large")


async def test_text_field_at_the_limit_is_accepted(start, mp3: bytes) -> None:
    server = await start(limits={"max_field_size": 1024})
    body = form(part("description", b"x" * 1024), part("file", mp3, filename="a.mp3"))
    status, payload = await post_raw(server, body)
    assert status == 201, payload
    assert payload["fields"]["description"] == "x" * 1024


async def test_json_body_is_unsupported_media_type(start) -> None:
    server = await start()
    await assert_refused(server, b'{"file": "x"}', 415, "unsupported_media_type", content_type="application/json")


@pytest.mark.parametrize("raw, shown", [
    ("C:\\Users\\x\\song.mp3", "song.mp3"),
    ("../../etc/passwd", "passwd"),
    ("bell\x07.mp3", "bell.mp3"),
    ("%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82.mp3", "Привет.mp3"),
    ("Привет.mp3", "Привет.mp3"),
    ("say %22hi%22.mp3", 'say "hi".mp3'),
    ("%FF%FE.mp3", "%FF%FE.mp3"),
    ("", ""),
    (None, ""),
])
def test_display_name_keeps_only_the_name(raw: str | None, shown: str) -> None:
    assert display_name(raw) == shown
