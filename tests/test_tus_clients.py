"""The tus server (`/files/`) end to end, driven by the real tus clients users run:
tuspy (sync and async), aiotus, and tus-js-client 4 under Node (tests/js/tus_upload.cjs).

Owns: one upload per scenario through the client's public API (chunks, resume with a new
client object, checksums, concatenation, deferred length, method override), then the
stored record and bytes checked over HTTP and the storage folders checked for leftovers.
Must not: mock anything, speak tus by hand (test_tus*.py does that), or leave a process
running. tus-js-client is installed here with `npm ci` into tests/js/node_modules (git-
ignored) the first time; the Node tests skip, saying why, without node/npm or a registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import json
import random
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiotus
import pytest
from aiotus import core as aiotus_core
from aiotus import creation as aiotus_creation
from support import Running
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

JS_DIR = Path(__file__).parent / "js"
KiB, MiB = 1024, 1024 * 1024
# Not a multiple of any chunk size, so every client also sends a short last chunk.
SIZE = 3 * MiB + 12_345
# Non-ASCII on purpose: each client encodes metadata its own way (UTF-8, base64).
FILENAME = "Aufnahme März – take 2.mp3"
NODE_TIMEOUT = 60.0

Start = Callable[..., Awaitable[Running]]


@pytest.fixture
def source(media_samples: dict[str, Path], tmp_path: Path) -> Path:
    """A real mp3 padded with random bytes to SIZE, so it takes several chunks."""
    head = media_samples["mp3_id3"].read_bytes()
    path = tmp_path / "source" / "take.mp3"
    path.parent.mkdir()
    path.write_bytes(head + random.Random(7).randbytes(SIZE - len(head)))
    return path


def upload_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


async def assert_stored(running: Running, url: str, source: Path, *, filename: str = FILENAME,
                        fields: dict[str, str] | None = None, partials: int = 0,
                        headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The upload at `url` is a complete file equal to `source`, and nothing else is left
    but, in tmp_dir, at most the `partials` partial uploads it was concatenated from (the
    server keeps them until `cleanup.partial_expiry`; tus allows either)."""
    file_id = upload_id(url)
    expected = await asyncio.to_thread(sha256_of, source)
    async with running.client.get(f"/files/{file_id}/info", headers=headers) as response:
        assert response.status == 200, await response.text()
        record: dict[str, Any] = await response.json()
    assert (record["id"], record["filename"], record["type"], record["mime"]) == (file_id, filename, "mp3", "audio/mpeg")
    assert record["size"] == source.stat().st_size
    assert record["sha256"] == expected
    if fields is not None:
        assert record["fields"] == fields
    async with running.client.get(f"/files/{file_id}", headers=headers) as response:
        assert response.status == 200
        body = await response.read()
    assert len(body) == source.stat().st_size
    assert await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest()) == expected
    assert running.stored() == sorted([f"{file_id}.json", f"{file_id}.mp3"])
    left = running.temp()  # a lock held, or a file of the final upload, would show here
    assert all(name.endswith((".info", ".part")) for name in left), f"left in storage.tmp_dir: {left}"
    assert file_id not in {name.split(".")[0] for name in left} and len(left) <= 2 * partials, left
    return record


# --- tuspy ------------------------------------------------------------------------------
# tuspy's Uploader is synchronous (requests): it runs in a thread so the server's loop,
# which is this test's loop, keeps serving. Given a path, tuspy 1.1.0 opens the file again
# for every request and never closes it, so the tests hand it an open file instead.


class KeptOpen(io.BytesIO):
    """A file's bytes that stay readable after close(): tuspy 1.1.0 closes the `file_stream`
    it fingerprints for its URL storage (`with self.get_file_stream()`) and then reads it."""

    def close(self) -> None:
        pass


async def test_tuspy_uploads_a_file_in_chunks_with_its_filename(start: Start, source: Path) -> None:
    running = await start()
    client = TusClient(str(running.client.make_url("/files/")))
    with open(source, "rb") as file:  # tuspy leaks the files it opens itself from a path
        uploader = client.uploader(file_stream=file, chunk_size=256 * KiB, metadata={"filename": FILENAME})
        await asyncio.to_thread(uploader.upload)
    assert uploader.offset == SIZE
    await assert_stored(running, uploader.url, source, fields={"filename": FILENAME})


async def test_tuspy_resumes_with_a_new_uploader_from_its_url_storage(start: Start, source: Path,
                                                                      tmp_path: Path) -> None:
    running = await start()
    client = TusClient(str(running.client.make_url("/files/")))
    urls = FileStorage(str(tmp_path / "tus-urls.json"))
    data = source.read_bytes()

    def first_attempt() -> str:
        uploader = client.uploader(file_stream=KeptOpen(data), chunk_size=256 * KiB,
                                   metadata={"filename": FILENAME}, store_url=True, url_storage=urls)
        for _ in range(3):
            uploader.upload_chunk()
        return str(uploader.url)  # ...and the program stops here

    try:
        url = await asyncio.to_thread(first_attempt)
        assert running.stored() == []  # an unfinished upload is not a file
        assert running.temp() == sorted([f"{upload_id(url)}.info", f"{upload_id(url)}.part"])
        # A new uploader (a restarted program) finds the URL by the file's fingerprint and
        # asks the server for its offset in its constructor.
        second = await asyncio.to_thread(client.uploader, file_stream=KeptOpen(data), chunk_size=256 * KiB,
                                         metadata={"filename": FILENAME}, store_url=True, url_storage=urls)
        assert (second.url, second.offset) == (url, 3 * 256 * KiB)
        await asyncio.to_thread(second.upload)
    finally:
        urls._db.close()  # tuspy never closes its TinyDB file
    await assert_stored(running, url, source)


async def test_tuspy_sends_its_bearer_token_with_every_request(start: Start, source: Path) -> None:
    running = await start(auth={"tokens": ["s3cret"]})
    auth = {"Authorization": "Bearer s3cret"}
    client = TusClient(str(running.client.make_url("/files/")), headers=auth)
    with open(source, "rb") as file:
        uploader = client.uploader(file_stream=file, chunk_size=1 * MiB, metadata={"filename": FILENAME})
        await asyncio.to_thread(uploader.upload)
    await assert_stored(running, uploader.url, source, headers=auth)


async def test_tuspy_sha1_upload_checksums_are_accepted(start: Start, source: Path) -> None:
    running = await start()
    client = TusClient(str(running.client.make_url("/files/")))
    with open(source, "rb") as file:
        uploader = client.uploader(file_stream=file, chunk_size=512 * KiB, metadata={"filename": FILENAME},
                                   upload_checksum=True)
        await asyncio.to_thread(uploader.upload_chunk)
        assert uploader.request is not None  # what it sent: tuspy keeps it only privately
        assert uploader.request._request_headers["upload-checksum"].startswith("sha1 ")
        await asyncio.to_thread(uploader.upload)
    await assert_stored(running, uploader.url, source)


async def test_tuspy_async_uploader_with_checksums_stores_the_file(start: Start, source: Path) -> None:
    running = await start()
    client = TusClient(str(running.client.make_url("/files/")))
    with open(source, "rb") as file:
        uploader = client.async_uploader(file_stream=file, chunk_size=1 * MiB, metadata={"filename": FILENAME},
                                         upload_checksum=True)
        await uploader.upload()
    await assert_stored(running, uploader.url, source)


# --- aiotus -----------------------------------------------------------------------------

NO_RETRY = aiotus.RetryConfiguration(retry_attempts=1)


async def test_aiotus_uploads_a_file_with_metadata(start: Start, source: Path) -> None:
    running = await start()
    with open(source, "rb") as file:
        location = await aiotus.upload(running.client.make_url("/files/"), file,
                                       {"filename": FILENAME.encode(), "note": b"from aiotus"},
                                       config=NO_RETRY, chunksize=1 * MiB)
    assert location is not None, "aiotus.upload failed (it logs why)"
    await assert_stored(running, str(location), source, fields={"filename": FILENAME, "note": "from aiotus"})


class DiesWhileReading(io.BytesIO):
    """A file whose program is killed once it has read `stop_at` bytes: the next read
    blocks (in aiotus's worker thread) until `let_go` is set, then gives nothing."""

    def __init__(self, data: bytes, stop_at: int) -> None:
        super().__init__(data)
        self.stop_at = stop_at
        self.stuck, self.let_go = threading.Event(), threading.Event()

    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell() >= self.stop_at:
            self.stuck.set()
            self.let_go.wait(10)
            return b""
        return super().read(size)


async def test_aiotus_resumes_an_interrupted_upload_at_the_servers_offset(start: Start, source: Path) -> None:
    running = await start()
    endpoint = running.client.make_url("/files/")
    dying = DiesWhileReading(source.read_bytes(), stop_at=3 * 256 * KiB)
    async with aiohttp.ClientSession() as session:
        location = await aiotus_creation.create(session, endpoint, dying, {"filename": FILENAME.encode()})
        transfer = asyncio.create_task(aiotus_core.upload_buffer(session, location, dying, chunksize=256 * KiB))
        try:
            # Three chunks are sent and answered, then the program dies reading the fourth.
            await asyncio.to_thread(dying.stuck.wait, 10)
            transfer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await transfer
        finally:
            dying.let_go.set()
        assert running.stored() == []
        # Resuming is upload_buffer again, from a new run: it asks HEAD for the offset.
        assert await aiotus_core.offset(session, location) == 3 * 256 * KiB
        with open(source, "rb") as file:
            await aiotus_core.upload_buffer(session, location, file, chunksize=1 * MiB)
    await assert_stored(running, str(location), source)


async def test_aiotus_upload_multiple_concatenates_its_parts(start: Start, source: Path, tmp_path: Path) -> None:
    running = await start()
    data = source.read_bytes()
    parts = []
    for index, start_at in enumerate(range(0, SIZE, 1 * MiB)):
        part = tmp_path / "source" / f"part{index}"
        part.write_bytes(data[start_at:start_at + 1 * MiB])
        parts.append(part)
    with contextlib.ExitStack() as files:
        location = await aiotus.upload_multiple(running.client.make_url("/files/"),
                                                [files.enter_context(open(part, "rb")) for part in parts],
                                                {"filename": FILENAME.encode()}, config=NO_RETRY)
    assert location is not None, "aiotus.upload_multiple failed (it logs why)"
    await assert_stored(running, str(location), source, partials=len(parts))


# --- tus-js-client under Node -----------------------------------------------------------


def _wanted_version() -> str:
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/tus-js-client"]["version"])


def _installed() -> bool:
    # npm writes node_modules/.package-lock.json last, so its presence means a whole install.
    installed = JS_DIR / "node_modules" / "tus-js-client" / "package.json"
    return ((JS_DIR / "node_modules" / ".package-lock.json").exists() and installed.exists()
            and json.loads(installed.read_text())["version"] == _wanted_version())


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    # Two pytest runs on one checkout must not run `npm ci` into the same folder at once.
    with open(Path(tempfile.gettempdir()) / "uploadsrv-tus-js-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tus-js-client installed in tests/js (once); skip when impossible."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("tus-js-client tests need node and npm on PATH")
    with _install_lock():
        if not _installed():
            try:
                done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR,
                                      capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                pytest.skip("`npm ci` in tests/js took over 300 s (no npm registry?)")
            if done.returncode != 0 or not _installed():
                errors = [line for line in done.stderr.splitlines() if "complete log" not in line]
                reason = " / ".join(errors[:3]) or "no output"
                pytest.skip(f"could not install tus-js-client with `npm ci` in tests/js (offline?): {reason}")
    return node


async def run_node(node: str, *, fails: bool = False, **spec: Any) -> dict[str, Any]:
    """Run tests/js/tus_upload.cjs with `spec`; its one JSON line, after a clean exit
    (or, with `fails`, after the upload failed)."""
    process = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "tus_upload.cjs"), json.dumps(spec), cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(NODE_TIMEOUT):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": "no output"}
    if fails:
        assert process.returncode == 1 and "error" in result, result
    else:
        assert process.returncode == 0 and "error" not in result, f"{result.get('error')}\n{stderr.decode()}"
    return result


def js_spec(running: Running, source: Path, scenario: str, **options: Any) -> dict[str, Any]:
    return {"scenario": scenario, "endpoint": str(running.client.make_url("/files/")), "file": str(source),
            "metadata": {"filename": FILENAME, "filetype": "audio/mpeg"}, "options": options}


async def test_tus_js_client_uploads_in_chunks_with_filename_and_filetype(start: Start, source: Path,
                                                                          node: str) -> None:
    running = await start()
    result = await run_node(node, **js_spec(running, source, "upload", chunkSize=1 * MiB))
    assert result["requests"] == ["POST 201"] + ["PATCH 204"] * 4
    await assert_stored(running, result["url"], source, fields={"filename": FILENAME, "filetype": "audio/mpeg"})


async def test_tus_js_client_resumes_an_aborted_upload_found_by_fingerprint(start: Start, source: Path,
                                                                             node: str, tmp_path: Path) -> None:
    running = await start()
    spec = js_spec(running, source, "resume", chunkSize=1 * MiB)
    result = await run_node(node, **spec, abortAfter=int(1.5 * MiB), urlStorage=str(tmp_path / "tus-urls.json"))
    assert result["url"] == result["firstUrl"] == result["previousUrl"]
    # The resumed upload asked where to go on, and did not start over: the first,
    # acknowledged chunk is kept, and maybe part of the aborted one.
    assert result["requests"][0] == "HEAD 200" and "POST 201" not in result["requests"]
    assert 1 * MiB <= result["headOffsets"][-1] < SIZE
    assert result["urlsLeftInStorage"] == 0  # removeFingerprintOnSuccess
    await assert_stored(running, result["url"], source)


async def test_tus_js_client_parallel_uploads_are_concatenated(start: Start, source: Path, node: str) -> None:
    running = await start()
    result = await run_node(node, **js_spec(running, source, "upload", parallelUploads=4))
    assert len(set(result["partialUrls"])) == 4
    assert result["requests"].count("POST 201") == 5  # four partial uploads and the final one
    await assert_stored(running, result["url"], source, fields={"filename": FILENAME, "filetype": "audio/mpeg"},
                        partials=4)
    assert {name.split(".")[0] for name in running.temp()} <= {upload_id(url) for url in result["partialUrls"]}


async def test_tus_js_client_creation_with_upload_and_method_override(start: Start, source: Path,
                                                                       node: str) -> None:
    running = await start()
    result = await run_node(node, **js_spec(running, source, "upload", chunkSize=1 * MiB,
                                            uploadDataDuringCreation=True, overridePatchMethod=True))
    # The first chunk rides on the POST; the rest go as POST + X-HTTP-Method-Override: PATCH.
    assert result["requests"] == ["POST 201"] + ["POST(PATCH) 204"] * 3
    await assert_stored(running, result["url"], source)


async def test_tus_js_client_streams_a_file_of_unknown_length(start: Start, source: Path, node: str) -> None:
    running = await start()
    result = await run_node(node, **js_spec(running, source, "stream", chunkSize=1 * MiB))
    # Upload-Defer-Length: 1 on the POST; the last PATCH tells the length.
    assert result["deferredLength"] is True
    assert result["requests"] == ["POST 201"] + ["PATCH 204"] * 4
    await assert_stored(running, result["url"], source)


async def test_tus_js_client_reports_a_refused_file_type_and_nothing_is_left(start: Start, node: str,
                                                                              media_samples: dict[str, Path]) -> None:
    running = await start()
    spec = js_spec(running, media_samples["impostor_png"], "upload", chunkSize=1 * MiB)
    result = await run_node(node, fails=True, **spec)
    assert result["status"] == 415
    assert json.loads(result["body"])["error"]["code"] == "unsupported_file_type"
    assert running.stored() == [] and running.temp() == []
