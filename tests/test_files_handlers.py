"""The files API: list (newest first, paginated), download with Range, info, delete, health."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import unquote

from support import FORM_CONTENT_TYPE, form, part


async def upload(server, data: bytes, filename: str = "a.mp3") -> dict:
    response = await server.client.post(
        "/upload", data=form(part("file", data, filename=filename)), headers={"Content-Type": FORM_CONTENT_TYPE})
    assert response.status == 201, await response.text()
    return await response.json()


async def test_list_is_newest_first_and_paginates_without_gaps(start, mp3: bytes) -> None:
    server = await start()
    ids = [(await upload(server, mp3 + bytes([i]) * 10))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = await (await server.client.get("/files", params=query)).json()
        assert len(page["files"]) <= 2
        seen += [record["id"] for record in page["files"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_list_rejects_a_bad_limit_and_a_forged_cursor(start) -> None:
    server = await start()
    for query in ({"limit": "0"}, {"limit": "abc"}, {"cursor": "not-a-cursor"}):
        response = await server.client.get("/files", params=query)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_query"


async def test_download_serves_bytes_type_and_safe_headers(start, mp3: bytes) -> None:
    server = await start()
    record = await upload(server, mp3, filename='naïve %22quote%22.mp3')  # as browsers encode "
    response = await server.client.get(record["url"])
    assert response.status == 200
    assert await response.read() == mp3
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("inline; filename=")
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == 'naïve "quote".mp3'
    assert '"quote"' not in disposition.split(";")[1]  # the ASCII fallback cannot break out of its quotes


async def test_download_supports_range_requests(start, mp3: bytes) -> None:
    server = await start()
    data = mp3 + os.urandom(100_000)
    record = await upload(server, data)
    response = await server.client.get(record["url"], headers={"Range": "bytes=100-199"})
    assert response.status == 206
    assert await response.read() == data[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = await server.client.get(record["url"], headers={"Range": "bytes=-10"})
    assert await tail.read() == data[-10:]
    beyond = await server.client.get(record["url"], headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status == 416


async def test_info_returns_the_record(start, mp3: bytes) -> None:
    server = await start()
    record = await upload(server, mp3)
    info = await (await server.client.get(f"{record['url']}/info")).json()
    assert info == record
    assert info["sha256"] == hashlib.sha256(mp3).hexdigest()


async def test_delete_removes_file_and_record(start, mp3: bytes) -> None:
    server = await start()
    record = await upload(server, mp3)
    response = await server.client.delete(record["url"])
    assert response.status == 204
    server.assert_nothing_left()
    for method, path in (("GET", record["url"]), ("GET", f"{record['url']}/info"), ("DELETE", record["url"])):
        missing = await server.client.request(method, path)
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "not_found"


async def test_ids_that_are_not_ours_are_not_found(start) -> None:
    server = await start()
    for file_id in ("..%2F..%2Fetc%2Fpasswd", "a.b", "x" * 65):
        response = await server.client.get(f"/files/{file_id}/info")
        assert response.status == 404


async def test_health_answers_ok(start) -> None:
    server = await start()
    response = await server.client.get("/health")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_unknown_route_and_method_get_json_errors(start) -> None:
    server = await start()
    missing = await server.client.get("/nope")
    assert (missing.status, (await missing.json())["error"]["code"]) == (404, "not_found")
    wrong = await server.client.put("/upload")
    assert (wrong.status, (await wrong.json())["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"]


async def test_root_serves_the_upload_page(start) -> None:
    server = await start()
    response = await server.client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = await response.text()
    assert 'type="file"' in page and "/upload" in page
