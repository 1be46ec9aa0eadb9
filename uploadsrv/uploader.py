"""`uploadsrv upload FILE... --url URL`: resumable uploads from a terminal, over tus.

Owns the client side (its command line is `uploader_options`): one progress bar per file (tqdm, on stderr), several
files at once (`--parallel`), resuming (the upload URL of each file is remembered by
`uploader_state`; the next run HEADs it and continues from the server's offset, or
starts over when the server no longer has it), retries with exponential backoff while the
network or the server is away (connection errors, 408/409/423/429/5xx), refusals shown
with the server's JSON message and not retried, and the final check: the stored record's
SHA-256 must equal the local file's (hashed in a thread while the bytes go out). One line
per verified file on stdout: name, size, type, sha256, URL, "verified".
Exit status: 0 all verified, 1 any failed, 2 usage error, 130 interrupted (Ctrl-C).
The tus wire protocol is aiotus's (creation, HEAD offset, PATCH loop); this module must
not speak it by hand, nor import the server's modules beyond the pure size parser.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
import yarl
from aiotus import core as tus_core
from aiotus import creation as tus_creation
from aiotus.common import ProtocolError
from tqdm import tqdm

from .uploader_options import MiB, Options, parse_args
from .uploader_state import UploadState, fingerprint

T = TypeVar("T")
INTERRUPTED = 130
# Worth another try: a request timed out, collided with itself (409, 423: the last run's
# request is still being let go), or the server is busy or down.
RETRY_STATUSES = frozenset({408, 409, 423, 429})
FIRST_DELAY, MAX_DELAY = 1.0, 30.0
# Unacknowledged bytes older than this mean the network is gone (TCP_USER_TIMEOUT); without
# it a PATCH into a dead link waits for the kernel's ~15 minutes of retransmissions.
STALL_SECONDS = 60
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


class Refused(Exception):
    """The server answered with an error status (and, from uploadsrv, its JSON error)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"refused by the server ({status} {code}): {message}")
        self.status = status

    @classmethod
    def from_body(cls, status: int, reason: str, body: bytes) -> Refused:
        try:
            error = json.loads(body)["error"]
            return cls(status, str(error["code"]), str(error["message"]))
        except (ValueError, KeyError, TypeError):
            text = body.decode("utf-8", "replace").strip()[:200]
            return cls(status, reason.lower().replace(" ", "_") or "error", text or reason or "no message")


class UploadFailed(Exception):
    """A file that did not end verified; the message says why."""


@dataclass(frozen=True)
class Verified:
    name: str
    size: int
    type: str
    sha256: str
    url: str

    def line(self) -> str:
        return "\t".join((self.name, str(self.size), self.type, self.sha256, self.url, "verified"))


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above the progress bars, not through them


def sha256_of(path: Path, stop: threading.Event) -> str:
    """The file's SHA-256; gives up (returns "") once `stop` is set, so Ctrl-C is not kept waiting."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(MiB):
            if stop.is_set():
                return ""
            digest.update(block)
    return digest.hexdigest()


def _socket_with_stall_limit(addr_info: tuple[Any, ...]) -> socket.socket:
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)
    if hasattr(socket, "TCP_USER_TIMEOUT") and family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, STALL_SECONDS * 1000)
    return sock


class FileUpload:
    """One file: resume or create, send, then check the stored record."""

    def __init__(self, options: Options, path: Path, slot: int) -> None:
        self.options, self.path, self.slot = options, path, slot
        self.name = path.name
        self.state = UploadState(options.state)
        self.bar: tqdm[Any] | None = None
        self.offset = 0  # the server's last word (HEAD or PATCH); the bar may be disabled

    async def run(self) -> Verified:
        size = (await asyncio.to_thread(self.path.stat)).st_size
        key = await asyncio.to_thread(fingerprint, str(self.options.endpoint), self.path)
        stop = threading.Event()
        local_hash = asyncio.ensure_future(asyncio.to_thread(sha256_of, self.path, stop))
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else {}
        connector = aiohttp.TCPConnector(socket_factory=_socket_with_stall_limit)
        try:
            file: BinaryIO = await asyncio.to_thread(open, self.path, "rb")
        except BaseException:
            local_hash.cancel()
            raise
        try:
            async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=TIMEOUT,
                                             middlewares=(self._answers,)) as session:
                try:
                    url, offset = await self._resume_or_create(session, key, file, size)
                    self._open_bar(size, offset)
                    await self._retrying("sending", lambda: tus_core.upload_buffer(
                        session, url, file, chunksize=self.options.chunk_size))
                except Refused as refusal:
                    if refusal.status not in (401, 403):  # a fixed token may still resume it
                        await asyncio.to_thread(self.state.forget, key)
                    raise
                record = await self._retrying("checking", lambda: self._record(session, url))
        except BaseException:
            local_hash.cancel()  # its thread sees `stop` and returns at once
            raise
        finally:
            stop.set()
            self._close_bar()
            await asyncio.to_thread(file.close)
        await asyncio.to_thread(self.state.forget, key)
        expected = await local_hash
        if record.get("sha256") != expected or record.get("size") != size:
            raise UploadFailed(f"the server stored sha256 {record.get('sha256')} ({record.get('size')} bytes), "
                               f"but the local file has {expected} ({size} bytes)")
        return Verified(self.name, size, str(record.get("type")), expected, str(url))

    async def _resume_or_create(self, session: aiohttp.ClientSession, key: str, file: BinaryIO,
                                size: int) -> tuple[yarl.URL, int]:
        if remembered := await asyncio.to_thread(self.state.upload_url, key):
            url = yarl.URL(remembered)
            try:
                offset = await self._retrying("resuming", lambda: tus_core.offset(session, url))
            except Refused as refusal:
                if refusal.status not in (404, 410):
                    raise
                say(f"{self.name}: the server no longer has the unfinished upload ({refusal.status}); starting over")
            else:
                say(f"{self.name}: resuming at {offset} of {size} bytes ({offset * 100 // max(size, 1)}%)")
                return url, offset
        metadata: dict[str, bytes | None] = {"filename": self.name.encode()}
        if filetype := mimetypes.guess_type(self.name)[0]:
            metadata["filetype"] = filetype.encode()
        endpoint = self.options.endpoint
        location = await self._retrying("creating the upload", lambda: tus_creation.create(
            session, endpoint, file, metadata))
        url = location if location.is_absolute() else endpoint.join(location)
        await asyncio.to_thread(self.state.remember, key, str(url), self.path)
        return url, 0

    async def _record(self, session: aiohttp.ClientSession, url: yarl.URL) -> dict[str, Any]:
        """The file record; the upload's URL names the file once it is complete."""
        async with session.get(url.with_path(url.path.rstrip("/") + "/info")) as response:
            record: dict[str, Any] = await response.json()
            return record

    async def _retrying(self, doing: str, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()`, again after a growing pause while the failure is worth retrying;
        an attempt that moved the upload forward resets the count."""
        failures = 0
        while True:
            before = self.offset
            try:
                return await operation()
            except Refused as refusal:
                if refusal.status not in RETRY_STATUSES and refusal.status < 500:
                    raise
                problem = str(refusal)
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            failures = 1 if self.offset > before else failures + 1
            if failures > self.options.retries:
                raise UploadFailed(f"{doing} failed {failures} times in a row (last: {problem}); "
                                   "run the same command again to resume")
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (failures - 1))
            say(f"{self.name}: {doing}: {problem}; retrying in {delay:.0f} s ({failures}/{self.options.retries})")
            await asyncio.sleep(delay)

    async def _answers(self, request: aiohttp.ClientRequest,
                       handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
                       ) -> aiohttp.ClientResponse:
        """Client middleware: errors become `Refused` with the server's message (before aiotus's
        raise_for_status drops the body), and every Upload-Offset moves the bar."""
        response = await handler(request)
        if response.status >= 400:
            try:
                body = await response.read()
            finally:
                response.release()
            raise Refused.from_body(response.status, response.reason or "", body)
        if (offset := response.headers.get("Upload-Offset", "")).isdigit():
            self._moved_to(int(offset))
        return response

    def _moved_to(self, offset: int) -> None:
        if self.bar is not None:
            if offset >= self.offset:
                self.bar.update(offset - self.offset)
            else:  # less than before (the server lost unacknowledged bytes): show the truth
                self.bar.n = offset
                self.bar.refresh()
        self.offset = offset

    def _open_bar(self, size: int, offset: int) -> None:
        self.offset = offset
        # `initial` so a resumed upload's speed and time left count only this run's bytes.
        self.bar = tqdm(total=size, initial=offset, desc=self.name, unit="B", unit_scale=True, unit_divisor=1024,
                        position=self.slot, leave=False, file=sys.stderr, dynamic_ncols=True,
                        disable=None if self.options.progress is None else not self.options.progress)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def upload_all(options: Options) -> int:
    """Every file, at most `parallel` at once; 0 when all are verified, else 1."""
    slots: asyncio.Queue[int] = asyncio.Queue()
    for slot in range(min(options.parallel, len(options.files))):
        slots.put_nowait(slot)

    async def one(path: Path) -> bool:
        slot = await slots.get()
        try:
            verified = await FileUpload(options, path, slot).run()
        except (Refused, UploadFailed, ProtocolError, OSError, ValueError) as error:
            say(f"{path.name}: failed: {error}")
            return False
        finally:
            slots.put_nowait(slot)
        tqdm.write(verified.line(), file=sys.stdout)
        return True

    results = await asyncio.gather(*(one(path) for path in options.files))
    return 0 if all(results) else 1


def main(argv: list[str]) -> int:
    """Run `uploadsrv upload` with `argv` (the words after `upload`); the exit status."""
    try:
        options = parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return asyncio.run(upload_all(options))
    except KeyboardInterrupt:
        print("uploadsrv upload: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
