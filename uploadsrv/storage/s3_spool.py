"""The local disk where the S3 backend gathers parts before sending them, with its budget.

Each part of an upload is spooled to a file of its own in this process's folder under
`spool_dir`, at most `part_size` bytes, and deleted once S3 has it. The budget is counted
in whole parts (`spool_budget // part_size` files at once, per process): a writer takes a
slot for the part it fills and hands it to the part's upload, which gives it back when
S3 answers. A writer that finds no slot waits (TCP backpressure reaches its client), so
disk use stays bounded; a part goes from its file to the socket in small chunks, never
whole in memory.

Blocking file work runs on this module's executor, never on the event loop. It knows
nothing of S3 or uploads.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ..errors import InsufficientStorage
from .part_writer import disk_full

_T = TypeVar("_T")
SPOOL_THREADS = 4
_FOLDER_PREFIX = "pid-"


class SpoolFile:
    """One part being gathered: append, read back whole, discard (all blocking)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def append(self, pieces: Sequence[bytes | memoryview]) -> None:
        assert self._fd is not None, "append after discard"
        try:
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    written = os.pwrite(self._fd, view, self.size)
                    view = view[written:]
                    self.size += written
        except OSError as error:
            if disk_full(error):
                raise InsufficientStorage("the server's spool disk is full; try again later") from None
            raise

    def read_all(self) -> bytes:
        assert self._fd is not None, "read after discard"
        data = os.pread(self._fd, self.size, 0)
        if len(data) != self.size:
            raise OSError(f"spool file {self.path.name} is shorter than written")
        return data

    def reader(self) -> BinaryIO:
        """The file opened again for reading from its start (to send it)."""
        return open(self.path, "rb")  # noqa: SIM115 - closed by the caller after the send

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """This process's spool folder, its executor and its budget of part slots."""

    def __init__(self, folder: Path, *, part_size: int, budget: int) -> None:
        self.part_size = part_size
        self.slots = max(1, budget // part_size)
        self._parent = folder
        # host.pid.random: a process removes only the folders of dead processes of its own
        # host (a spool_dir shared by containers must not lose a live neighbour's parts).
        self._folder = folder / f"{_FOLDER_PREFIX}{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        self._free = asyncio.Semaphore(self.slots)
        self._executor = ThreadPoolExecutor(SPOOL_THREADS, thread_name_prefix="uploadsrv-spool")
        self._prepared = False

    @property
    def folder(self) -> Path:
        return self._folder

    def prepare(self) -> None:
        """Create this process's folder, and remove those of processes that died (blocking)."""
        self._parent.mkdir(parents=True, exist_ok=True)
        for entry in self._parent.iterdir():
            if not entry.is_dir() or not entry.name.startswith(_FOLDER_PREFIX):
                continue
            host, _, rest = entry.name[len(_FOLDER_PREFIX):].rpartition(".")[0].rpartition(".")
            pid = rest
            if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        self._folder.mkdir(mode=0o700, exist_ok=True)
        self._prepared = True

    def close(self) -> None:
        """Stop the executor and remove this process's folder (blocking; at shutdown)."""
        self._executor.shutdown(wait=True)
        shutil.rmtree(self._folder, ignore_errors=True)

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def take(self, upload_id: str) -> SpoolFile:
        """A new spool file, once a slot is free; `give_back` it when done with it."""
        await self._free.acquire()
        try:
            if not self._prepared:
                await self.run(self.prepare)
            return await self.run(SpoolFile, self._folder / f"{upload_id}-{secrets.token_hex(6)}.part")
        except BaseException:
            self._free.release()
            raise

    async def give_back(self, spooled: SpoolFile) -> None:
        """Delete the file and free its slot; safe to call once per `take`."""
        try:
            await self.run(spooled.discard)
        finally:
            self._free.release()
