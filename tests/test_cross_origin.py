"""Browsers and proxies: CORS for configured origins (preflights answered, tus headers
exposed) and a tus Location that is right behind a TLS-terminating proxy."""

from __future__ import annotations

TUS = {"Tus-Resumable": "1.0.0"}
ORIGIN = "https://app.example.com"


async def test_a_preflight_from_an_allowed_origin_is_answered_without_a_token(start) -> None:
    server = await start(cors={"origins": [ORIGIN]}, auth={"tokens": ["s3cret"]})
    response = await server.client.options("/files/", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "tus-resumable, upload-length, upload-metadata, authorization"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for header in ("tus-resumable", "upload-length", "upload-metadata", "upload-offset", "authorization",
                   "upload-checksum", "upload-concat", "x-http-method-override"):
        assert header in allowed


async def test_responses_to_an_allowed_origin_expose_the_tus_headers(start) -> None:
    server = await start(cors={"origins": [ORIGIN]})
    response = await server.client.post("/files", headers={**TUS, "Origin": ORIGIN, "Upload-Length": "100"})
    assert response.status == 201
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = response.headers["Access-Control-Expose-Headers"]
    for header in ("Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Resumable",
                   "Tus-Version", "Upload-Metadata"):
        assert header in exposed
    # Errors carry them too, so a page's script can read the JSON message.
    refused = await server.client.post("/files", headers={**TUS, "Origin": ORIGIN})
    assert refused.status == 400 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_other_origins_get_no_cors_headers(start) -> None:
    server = await start(cors={"origins": [ORIGIN]})
    for response in (
        await server.client.options("/files", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "POST"}),
        await server.client.get("/files", headers={"Origin": "https://evil.example"}),
    ):
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_wildcard_allows_every_origin(start) -> None:
    server = await start(cors={"origins": ["*"]})
    response = await server.client.get("/health", headers={"Origin": "https://anything.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_location_uses_the_configured_public_url(start) -> None:
    server = await start(server={"public_url": "https://uploads.example.com/"})
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": "10"})
    assert response.headers["Location"].startswith("https://uploads.example.com/files/")


async def test_location_follows_trusted_forwarded_headers(start) -> None:
    server = await start(server={"trust_forwarded": True})
    response = await server.client.post("/files", headers={
        **TUS, "Upload-Length": "10", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "media.example.org"})
    assert response.headers["Location"].startswith("https://media.example.org/files/")


async def test_forwarded_headers_are_ignored_unless_trusted(start) -> None:
    server = await start()
    response = await server.client.post("/files", headers={
        **TUS, "Upload-Length": "10", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert response.headers["Location"].startswith(f"http://127.0.0.1:{server.port}/files/")


async def test_a_forwarded_host_that_is_not_a_host_is_ignored(start) -> None:
    server = await start(server={"trust_forwarded": True})
    response = await server.client.post("/files", headers={
        **TUS, "Upload-Length": "10", "X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "a/b@evil"})
    assert response.headers["Location"].startswith(f"http://127.0.0.1:{server.port}/files/")


async def test_a_host_header_that_is_not_a_host_gives_a_relative_location(start) -> None:
    server = await start()
    response = await server.client.post("/files", headers={**TUS, "Upload-Length": "10", "Host": "a/b@evil"})
    assert response.status == 201
    location = response.headers["Location"]
    assert location.startswith("/files/") and "evil" not in location
    # The relative URL works as the upload's URL.
    head = await server.client.head(location, headers=TUS)
    assert head.status == 200 and head.headers["Upload-Offset"] == "0"
