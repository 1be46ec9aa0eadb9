"""`uploadsrv upload` (uploadsrv/uploader.py, uploader_options.py, uploader_state.py) end to end.

Owns: the command run as a real process (`python -m uploadsrv.uploader`, so these tests do
not depend on cli.py's dispatch) against the real app on loopback (`start`) or, where the
server must die and come back, the real server process; what it prints, its exit status,
what the server stored (checked over HTTP) and what the state file remembers.
Must not: mock anything, sleep fixed times (progress is polled on the server's tmp_dir),
or leave a process running.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import pty
import random
import shutil
import signal
import struct
import sys
import termios
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yarl
from support import Running, ServerProcess, apoll, start_process

from uploadsrv import uploader, uploader_options
from uploadsrv.uploader_state import UploadState, fingerprint

KiB, MiB = 1024, 1024 * 1024
RUN_TIMEOUT = 30.0
INTERRUPTED_MESSAGE = "interrupted; run the same command again to resume"
Start = Callable[..., Awaitable[Running]]


@dataclass
class Finished:
    status: int
    stdout: str
    stderr: str

    def verified(self) -> dict[str, list[str]]:
        """name -> the fields of its result line (name, size, type, sha256, URL, "verified")."""
        rows = [line.split("\t") for line in self.stdout.splitlines() if line]
        assert all(len(row) == 6 and row[5] == "verified" for row in rows), self.stdout
        return {row[0]: row for row in rows}


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "UPLOADSRV_TOKEN"}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")  # never the developer's own state
    return {**env, **extra}


async def spawn(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                stderr: int = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploadsrv.uploader", *args, cwd=tmp_path, env=env or client_env(tmp_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr)


async def finish(process: asyncio.subprocess.Process) -> Finished:
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), (stderr or b"").decode())


async def upload(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Finished:
    """Run `uploadsrv upload ARGS` to the end; the server (this test's loop) keeps serving meanwhile."""
    return await finish(await spawn(tmp_path, *args, env=env))


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def padded_mp3(media_samples: dict[str, Path], path: Path, size: int, seed: int = 7) -> Path:
    """A real mp3 padded with random bytes to `size`, so it takes many chunks."""
    head = media_samples["mp3_id3"].read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + random.Random(seed).randbytes(size - len(head)))
    return path


def file_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


async def record_of(running: Running, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with running.client.get(f"/files/{file_id(url)}/info", headers=headers) as response:
        assert response.status == 200, await response.text()
        record: dict[str, Any] = await response.json()
        return record


def largest_part(tmp_dir: Path) -> int:
    return max((part.stat().st_size for part in tmp_dir.glob("*.part")), default=0)


async def test_two_media_files_upload_at_once_and_each_is_verified(start: Start, media_samples: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    running = await start()
    talk = padded_mp3(media_samples, tmp_path / "in" / "talk.mp3", 4 * MiB + 123)
    # Non-ASCII on purpose: the name travels as tus metadata (base64 of UTF-8).
    take = tmp_path / "in" / "Aufnahme März.flac"
    shutil.copy(media_samples["flac"], take)
    state = tmp_path / "state.json"
    done = await upload(tmp_path, str(talk), str(take), "--url", str(running.client.make_url("/")),
                        "--chunk-size", "1MiB", "--parallel", "2", "--state", str(state))
    assert done.status == 0, done.stderr
    lines = done.verified()
    assert sorted(lines) == ["Aufnahme März.flac", "talk.mp3"]
    for path, kind, mime in ((talk, "mp3", "audio/mpeg"), (take, "flac", "audio/flac")):
        name, size, shown_type, sha256, url, _ = lines[path.name]
        local = sha256_of(path)
        assert (int(size), shown_type, sha256) == (path.stat().st_size, kind, local)
        record = await record_of(running, url)
        assert (record["sha256"], record["size"], record["type"]) == (local, path.stat().st_size, kind)
        assert record["filename"] == path.name
        assert record["fields"]["filetype"] == mime
    assert json.loads(state.read_text()) == {}, "finished uploads must be forgotten"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """The real server process, started (or restarted on the same port) by calling the
    yielded function. The process, not `start`: aiohttp's test server cancels a handler
    whose client went away, which production never does, and these tests cut clients off."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    config = workdir / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n')
    started: list[ServerProcess] = []

    def launch(port: int | None = None) -> ServerProcess:
        started.append(start_process(config, workdir, port=port))
        return started[-1]

    yield launch
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


async def server_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def test_an_interrupted_upload_resumes_at_the_servers_offset(
        served: Callable[..., ServerProcess], media_samples: dict[str, Path], tmp_path: Path) -> None:
    server = await asyncio.to_thread(served)
    source = padded_mp3(media_samples, tmp_path / "in" / "long take.mp3", 16 * MiB)
    command = (str(source), "--url", server.url, "--chunk-size", "64KiB")
    first = await spawn(tmp_path, *command)
    tmp_dir = tmp_path / "server" / "tmp"
    await apoll(lambda: largest_part(tmp_dir) >= MiB or first.returncode is not None, timeout=RUN_TIMEOUT)
    first.send_signal(signal.SIGINT)
    stopped = await finish(first)
    assert stopped.status == uploader.INTERRUPTED, stopped.stderr
    assert INTERRUPTED_MESSAGE in stopped.stderr
    assert "Traceback" not in stopped.stderr

    # The default state file (under $XDG_STATE_HOME) remembers the upload's URL...
    state = UploadState(tmp_path / "xdg-state" / "uploadsrv" / "uploads.json")
    entries = state.entries()
    assert [entry["path"] for entry in entries.values()] == [str(source.resolve())]
    remembered = next(iter(entries.values()))["upload_url"]
    async with aiohttp.ClientSession() as session, \
            session.head(remembered, headers={"Tus-Resumable": "1.0.0"}) as response:
        assert response.status == 200
        stored_before = int(response.headers["Upload-Offset"])
    assert 0 < stored_before < source.stat().st_size

    # ...and the same command again continues that upload instead of starting at 0.
    again = await upload(tmp_path, *command)
    assert again.status == 0, again.stderr
    resumed_at = int(again.stderr.split("resuming at ", 1)[1].split()[0])
    assert stored_before <= resumed_at < source.stat().st_size
    (name, size, _, sha256, url, _), = again.verified().values()
    assert url == remembered
    assert sha256 == sha256_of(source) == (await server_json(f"{url}/info"))["sha256"]
    assert sorted(os.listdir(tmp_path / "server" / "files")) == [f"{file_id(url)}.json", f"{file_id(url)}.mp3"]
    assert state.entries() == {}


async def test_a_server_that_goes_away_mid_upload_is_retried_until_it_is_back(
        served: Callable[..., ServerProcess], media_samples: dict[str, Path], tmp_path: Path) -> None:
    server = await asyncio.to_thread(served)
    source = padded_mp3(media_samples, tmp_path / "in" / "take.mp3", 16 * MiB)
    client = await spawn(tmp_path, str(source), "--url", server.url, "--chunk-size", "64KiB",
                         "--state", str(tmp_path / "state.json"))
    await apoll(lambda: largest_part(tmp_path / "server" / "tmp") >= MiB or client.returncode is not None,
                timeout=RUN_TIMEOUT)
    server.process.kill()  # as a crash or a lost network looks to the client: the connection just ends
    await asyncio.to_thread(server.process.wait)
    await asyncio.to_thread(served, server.port)
    done = await finish(client)
    assert done.status == 0, done.stderr
    assert "retrying in" in done.stderr
    (_, _, kind, sha256, url, _), = done.verified().values()
    assert (kind, sha256) == ("mp3", sha256_of(source))
    assert (await server_json(f"{url}/info"))["sha256"] == sha256


async def test_refused_files_exit_1_with_the_servers_message_and_the_rest_are_verified(
        start: Start, media_samples: dict[str, Path], tmp_path: Path) -> None:
    running = await start(limits={"max_file_size": 2 * MiB})
    impostor = tmp_path / "in" / "x.mp3"
    impostor.parent.mkdir()
    impostor.write_bytes(random.Random(3).randbytes(64 * KiB))
    too_large = padded_mp3(media_samples, tmp_path / "in" / "long.mp3", 3 * MiB)
    fine = tmp_path / "in" / "fine.ogg"
    shutil.copy(media_samples["ogg_vorbis"], fine)
    state = tmp_path / "state.json"
    done = await upload(tmp_path, str(impostor), str(too_large), str(fine), "--url",
                        str(running.client.make_url("/")), "--chunk-size", "256KiB", "--state", str(state))
    assert done.status == 1, done.stderr
    assert list(done.verified()) == ["fine.ogg"]
    refusals = {line.split(":", 1)[0]: line for line in done.stderr.splitlines() if ": failed: " in line}
    assert "415 unsupported_file_type" in refusals["x.mp3"]
    assert "not an accepted audio or video type" in refusals["x.mp3"]  # the server's own words
    assert "413 file_too_large" in refusals["long.mp3"]
    assert "retrying" not in done.stderr  # a refusal is final
    assert json.loads(state.read_text()) == {}
    assert len(running.stored()) == 2 and running.temp() == []


async def test_a_token_is_sent_from_the_option_or_the_environment(start: Start, media_samples: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    running = await start(auth={"tokens": ["s3cret"]})
    source = tmp_path / "in" / "take.wav"
    source.parent.mkdir()
    shutil.copy(media_samples["wav"], source)
    base = (str(source), "--url", str(running.client.make_url("/")))

    def state(name: str) -> tuple[str, str]:  # one each: the runs share a file, so a fingerprint
        return ("--state", str(tmp_path / f"{name}.json"))

    refused, with_option, from_environment = await asyncio.gather(
        upload(tmp_path, *base, *state("none")),
        upload(tmp_path, *base, *state("option"), "--token", "s3cret"),
        upload(tmp_path, *base, *state("environment"), env=client_env(tmp_path, UPLOADSRV_TOKEN="s3cret")))
    assert refused.status == 1 and "401 unauthorized" in refused.stderr, refused.stderr
    for done in (with_option, from_environment):
        assert done.status == 0, done.stderr
        (_, _, _, sha256, url, _), = done.verified().values()
        assert (await record_of(running, url, {"Authorization": "Bearer s3cret"}))["sha256"] == sha256


async def test_a_remembered_upload_the_server_no_longer_has_starts_over(start: Start, mp3: bytes,
                                                                        tmp_path: Path) -> None:
    running = await start()
    source = tmp_path / "take.mp3"
    source.write_bytes(mp3)
    endpoint = uploader_options.tus_endpoint(str(running.client.make_url("/")))
    state = UploadState(tmp_path / "state.json")
    gone = str(endpoint.join(yarl.URL("AAAAAAAAAAAAAAAAAAAAAA")))
    state.remember(fingerprint(str(endpoint), source), gone, source)
    done = await upload(tmp_path, str(source), "--url", str(running.client.make_url("/")), "--state",
                        str(state.path))
    assert done.status == 0, done.stderr
    assert "no longer has the unfinished upload (404); starting over" in done.stderr
    (_, _, _, sha256, url, _), = done.verified().values()
    assert url != gone and sha256 == hashlib.sha256(mp3).hexdigest()


async def test_the_progress_bar_shows_bytes_and_speed_on_a_terminal(start: Start, media_samples: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    running = await start()
    source = padded_mp3(media_samples, tmp_path / "in" / "bar.mp3", 2 * MiB)
    terminal, child_end = pty.openpty()
    # A new pty is 0 columns wide, and tqdm draws nothing in no room: give it a window's size.
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        process = await spawn(tmp_path, str(source), "--url", str(running.client.make_url("/")), "--chunk-size",
                              "64KiB", "--state", str(tmp_path / "state.json"), stderr=child_end)
    finally:
        os.close(child_end)
    try:
        screen = await asyncio.to_thread(read_terminal, terminal)
    finally:
        os.close(terminal)
    done = await finish(process)
    assert done.status == 0
    assert "bar.mp3:" in screen and "%|" in screen and "B/s" in screen, screen


def read_terminal(fd: int) -> str:
    """Everything written to the pty until the child closes it (Linux then answers EIO)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as error:
            if error.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("args", [
    ["missing.mp3", "--url", "http://127.0.0.1:9"],
    ["{file}"],
    ["{file}", "--url", "ftp://127.0.0.1/"],
    ["{file}", "--url", "http://127.0.0.1:9", "--chunk-size", "lots"],
    ["{file}", "--url", "http://127.0.0.1:9", "--parallel", "0"],
], ids=["missing-file", "no-url", "not-http", "bad-chunk-size", "no-parallelism"])
def test_usage_errors_exit_2_before_anything_is_sent(args: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "take.mp3"
    source.write_bytes(b"x")
    status = uploader.main([arg.format(file=source) for arg in args])
    assert status == 2
    assert "usage: uploadsrv upload" in capsys.readouterr().err
