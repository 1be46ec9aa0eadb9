"""Completion hooks with a real command and a real local HTTP receiver: the record arrives,
and a failing, slow or absent receiver is logged and counted but never delays an upload
or the shutdown."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from aiohttp import web
from support import apoll, free_port

from uploadsrv.appkeys import HOOKS

TUS = {"Tus-Resumable": "1.0.0"}


def command(script: Path, body: str) -> str:
    script.write_text(body)
    return f"{sys.executable} {script}"


async def upload(server, data: bytes) -> dict:
    from aiohttp import FormData
    form = FormData()
    form.add_field("file", data, filename="talk.mp3", content_type="audio/mpeg")
    form.add_field("description", "keynote")
    response = await server.client.post("/upload", data=form)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_a_command_hook_gets_the_record_on_stdin(start, mp3: bytes, tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    hook = command(tmp_path / "hook.py", f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())\n")
    server = await start(hooks={"command": hook})
    record = await upload(server, mp3)
    await apoll(lambda: out.exists() and out.stat().st_size > 0)
    assert json.loads(out.read_text()) == record
    await apoll(lambda: server.client.app[HOOKS].counts.delivered == 1)


async def test_a_url_hook_gets_the_record_for_tus_and_one_shot_uploads(start, mp3: bytes) -> None:
    received: list[dict] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/uploaded", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        server = await start(hooks={"url": f"http://127.0.0.1:{port}/uploaded"})
        one_shot = await upload(server, mp3)
        created = await server.client.post("/files", headers={**TUS, "Upload-Length": str(len(mp3))})
        path = "/files/" + created.headers["Location"].rsplit("/", 1)[1]
        patched = await server.client.patch(path, data=mp3, headers={
            **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        assert patched.status == 204
        await apoll(lambda: len(received) == 2)
        assert received[0] == one_shot
        assert received[1]["id"] == path.rsplit("/", 1)[1] and received[1]["size"] == len(mp3)
    finally:
        await runner.cleanup()


async def test_a_receiver_that_is_down_is_retried_logged_and_counted(start, mp3: bytes, caplog) -> None:
    server = await start(hooks={"url": f"http://127.0.0.1:{free_port()}/down", "retries": 1})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="uploadsrv.hooks"):
        record = await upload(server, mp3)
        assert time.monotonic() - started < 2  # answered without waiting for the hook
        hooks = server.client.app[HOOKS]
        await apoll(lambda: hooks.counts.given_up == 1, timeout=15)
    assert hooks.counts.failed_attempts == 2
    assert record["id"] in caplog.text and "giving up" in caplog.text
    assert (await server.client.get(record["url"] + "/info")).status == 200  # the file is safe


async def test_a_slow_hook_is_killed_after_its_timeout_and_never_holds_up_uploads_or_shutdown(
        start, mp3: bytes, tmp_path: Path, caplog) -> None:
    hook = command(tmp_path / "slow.py", "import time; time.sleep(30)\n")
    server = await start(hooks={"command": hook, "timeout": "0.5s", "retries": 0})
    with caplog.at_level(logging.WARNING, logger="uploadsrv.hooks"):
        started = time.monotonic()
        await upload(server, mp3)
        await upload(server, mp3)
        assert time.monotonic() - started < 3
        hooks = server.client.app[HOOKS]
        await apoll(lambda: hooks.counts.given_up >= 1)
        assert "killed" in caplog.text
        stopping = time.monotonic()
        await server.client.close()  # the second delivery may still be running: not waited on
    assert time.monotonic() - stopping < 3
