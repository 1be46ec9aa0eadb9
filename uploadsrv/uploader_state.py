"""What `uploadsrv upload` remembers between runs: the tus upload URL of each file in flight.

Owns the state file (default `$XDG_STATE_HOME/uploadsrv/uploads.json`, else
`~/.local/state/uploadsrv/uploads.json`) and the fingerprint that keys it, as tus clients
do: the server's tus endpoint, the file's real path, its size and its mtime, so an edited
or replaced file never resumes into an old upload. Every change re-reads the file under
an exclusive `flock` and replaces it atomically (temp file, fsync, rename), so two runs or
two threads never lose each other's entries and a crash never leaves half a file.
Must not: speak HTTP, or be called on an event loop (it does blocking disk I/O).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_state_path() -> Path:
    """The XDG state folder's uploadsrv/uploads.json."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "uploadsrv" / "uploads.json"


def fingerprint(endpoint: str, path: Path) -> str:
    """A key for this file's content as the file system describes it, at this endpoint."""
    stat = path.stat()
    # Readable parts are stored beside the URL; the key only has to be stable and short.
    identity = json.dumps([endpoint, str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


class UploadState:
    """fingerprint -> {"upload_url", "path", "size", "saved_at"} in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def upload_url(self, key: str) -> str | None:
        entry = self._read().get(key)
        url = entry.get("upload_url") if isinstance(entry, dict) else None
        return url if isinstance(url, str) else None

    def remember(self, key: str, upload_url: str, file: Path) -> None:
        with self._locked() as entries:
            entries[key] = {"upload_url": upload_url, "path": str(file.resolve()), "size": file.stat().st_size,
                            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def forget(self, key: str) -> None:
        with self._locked() as entries:
            entries.pop(key, None)

    def entries(self) -> dict[str, Any]:
        return self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # A damaged state file costs only resumability: the uploads start over.
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The entries, read under the lock and written back atomically on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            self._write(entries)

    def _write(self, entries: dict[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entries, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
