"""`GET /metrics`: Prometheus text format, figures read before and after real uploads and
refusals, and the token rule."""

from __future__ import annotations

import os

from aiohttp import FormData
from prometheus_client.parser import text_string_to_metric_families

TUS = {"Tus-Resumable": "1.0.0"}


async def scrape(server, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await server.client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


async def one_shot(server, data: bytes) -> int:
    form = FormData()
    form.add_field("file", data, filename="a.mp3", content_type="audio/mpeg")
    return (await server.client.post("/upload", data=form)).status


async def test_uploads_and_refusals_move_the_counters(start, mp3: bytes) -> None:
    server = await start()
    before = await scrape(server)
    assert await one_shot(server, mp3) == 201
    assert await one_shot(server, os.urandom(20_000)) == 415
    created = await server.client.post("/files", headers={**TUS, "Upload-Length": str(len(mp3))})
    path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
    patched = await server.client.patch(path, data=mp3, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status == 204
    unfinished = await server.client.post("/files", headers={**TUS, "Upload-Length": "1000"})
    assert unfinished.status == 201
    after = await scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("uploadsrv_uploads_started_total", kind="multipart") == 2
    assert moved("uploadsrv_uploads_started_total", kind="tus") == 2
    assert moved("uploadsrv_uploads_completed_total", kind="multipart") == 1
    assert moved("uploadsrv_uploads_completed_total", kind="tus") == 1
    assert moved("uploadsrv_uploads_failed_total", kind="multipart", code="unsupported_file_type") == 1
    assert moved("uploadsrv_received_bytes_total", kind="tus") == len(mp3)
    assert moved("uploadsrv_received_bytes_total", kind="multipart") > len(mp3) + 20_000
    assert moved("uploadsrv_upload_size_bytes_count", kind="tus") == 1
    assert moved("uploadsrv_upload_duration_seconds_count", kind="multipart") == 1
    assert value(after, "uploadsrv_upload_requests_in_flight", kind="multipart") == 0
    assert value(after, "uploadsrv_uploads_unfinished") == 1
    assert value(after, "uploadsrv_storage_free_bytes") > 0
    assert value(after, "process_resident_memory_bytes") > 0


async def test_an_early_refusal_is_counted_by_its_code(start) -> None:
    server = await start(limits={"max_file_size": "1MiB"})
    refused = await server.client.post("/files", headers={**TUS, "Upload-Length": str(10 << 20)})
    assert refused.status == 413
    figures = await scrape(server)
    assert value(figures, "uploadsrv_uploads_failed_total", kind="tus", code="file_too_large") == 1


async def test_metrics_need_a_token_when_tokens_are_configured(start) -> None:
    server = await start(auth={"tokens": ["upload-token"]}, metrics={"token": "scrape-token"})
    assert (await server.client.get("/metrics")).status == 401
    assert (await server.client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    await scrape(server, "scrape-token")
    await scrape(server, "upload-token")
    # The scraper's token cannot upload.
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": "10",
                                                            "Authorization": "Bearer scrape-token"})
    assert response.status == 401
