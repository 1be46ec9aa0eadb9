"""Completion hooks: when a file is committed, run a configured command (the record as JSON
on its standard input) and/or POST the record to a configured URL.

Deliveries happen in one background task, after the upload has been answered: a slow,
failing or absent receiver is retried with backoff, logged and counted, and never
delays, blocks or loses an upload. At shutdown the task is cancelled at once; deliveries
still waiting are logged by file id (a pipeline that must see every file can also watch
`storage.dir` for `*.json` records, which are written last).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from ..config import HooksConfig
from ..storage import FileRecord

log = logging.getLogger("uploadsrv.hooks")
QUEUE_LIMIT = 10_000
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0


class HookFailed(Exception):
    """One delivery attempt failed; the text says why."""


@dataclass
class HookCounts:
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    dropped: int = 0


class CompletionHooks:
    """The configured hooks and their delivery queue."""

    def __init__(self, config: HooksConfig,
                 on_attempt: Callable[[str, bool], None] = lambda hook, delivered: None) -> None:
        """`on_attempt(hook, delivered)` is told of every attempt (metrics)."""
        self._config = config
        self._on_attempt = on_attempt
        self._command = shlex.split(config.command) if config.command else []
        self._queue: asyncio.Queue[FileRecord] = asyncio.Queue(QUEUE_LIMIT)
        self.counts = HookCounts()

    @property
    def enabled(self) -> bool:
        return bool(self._command or self._config.url)

    def file_committed(self, record: FileRecord) -> None:
        """Queue the deliveries for a committed file; never waits."""
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.counts.dropped += 1
            log.warning("hooks: queue full (%d waiting); no hook for file %s", QUEUE_LIMIT, record.id)

    async def run(self) -> None:
        """Deliver queued records one after another, forever."""
        async with aiohttp.ClientSession() as session:
            while True:
                record = await self._queue.get()
                await self._deliver(record, session)

    def waiting(self) -> list[str]:
        return [record.id for record in self._queue._queue]  # type: ignore[attr-defined]

    async def _deliver(self, record: FileRecord, session: aiohttp.ClientSession) -> None:
        body = json.dumps(record.to_json(), ensure_ascii=False).encode()
        targets: list[tuple[str, Callable[[bytes], Awaitable[None]]]] = (
            [("command", self._run_command)] if self._command else [])
        if self._config.url:
            targets.append(("url", lambda data: self._post(session, data)))
        for name, deliver in targets:
            delay = BACKOFF_START
            for attempt in range(1, self._config.retries + 2):
                try:
                    await deliver(body)
                    self.counts.delivered += 1
                    self._on_attempt(name, True)
                    break
                except HookFailed as failure:
                    self.counts.failed_attempts += 1
                    self._on_attempt(name, False)
                    if attempt > self._config.retries:
                        self.counts.given_up += 1
                        log.error("hooks: %s hook for file %s failed %d times, giving up: %s",
                                  name, record.id, attempt, failure)
                        break
                    log.warning("hooks: %s hook for file %s failed (attempt %d), retrying in %g s: %s",
                                name, record.id, attempt, delay, failure)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)

    async def _run_command(self, body: bytes) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        except OSError as error:
            raise HookFailed(f"cannot start {self._command[0]!r}: {error}") from None
        try:
            async with asyncio.timeout(self._config.timeout):
                _, errors = await process.communicate(body)
        except TimeoutError:
            await _kill(process)
            raise HookFailed(f"still running after {self._config.timeout:g} s; killed") from None
        except asyncio.CancelledError:
            await _kill(process)  # shutting down: the hook does not outlive the server
            raise
        if process.returncode != 0:
            tail = errors.decode(errors="replace").strip().splitlines()[-1:] if errors else []
            raise HookFailed(f"exit status {process.returncode}" + (f": {tail[0][:200]}" if tail else ""))

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(self._config.url, data=body, headers={"Content-Type": "application/json"},
                                    timeout=aiohttp.ClientTimeout(total=self._config.timeout)) as response:
                await response.read()
                if response.status >= 300:
                    raise HookFailed(f"{self._config.url} answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise HookFailed(f"{self._config.url}: {error.__class__.__name__} {error}".strip()) from None


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.communicate()


async def hooks_context(hooks: CompletionHooks) -> AsyncIterator[None]:
    """Run the delivery task while the app runs; cancel it at shutdown, never wait for it."""
    task = asyncio.create_task(hooks.run(), name="uploadsrv-hooks")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    waiting = hooks.waiting()
    if waiting:
        log.warning("hooks: shutting down with %d delivery(ies) not made, for files: %s",
                    len(waiting), ", ".join(waiting[:20]))
