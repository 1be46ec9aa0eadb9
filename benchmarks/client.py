"""The upload clients: curl for one-shot uploads, tus_client.py for tus uploads.

Owns building the curl command lines (multipart `-F` for multipart servers, `-T` for the
raw peers), starting them, and reading back status, time_total and size_upload; starting
tus_client.py as a process of its own (so that it is a client like curl, not a thread
sharing the benchmark's interpreter with the /health prober) and reading its JSON; and
finding where a server takes tus uploads. Both kinds of client inherit the benchmark
process's CPU affinity (see pinning.py). Every call has a time limit. Does not start
servers or measure them.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WRITE_OUT = "%{http_code} %{time_total} %{size_upload}"
TUS_CLIENT = Path(__file__).resolve().parent / "tus_client.py"


@dataclass
class UploadResult:
    status: int
    seconds: float  # curl's time_total: from start to the response being read
    bytes_sent: int  # curl's size_upload: body bytes the client got to send
    body: dict | None
    error: str = ""


class CurlUpload:
    """One curl process uploading a file; start it, then wait() for its result."""

    def __init__(self, url: str, source: Path, body: str, response_path: Path,
                 expect_100: bool, max_seconds: float, filename: str = "x.mp3") -> None:
        self.response_path = response_path
        command = ["curl", "-sS", "-o", str(response_path), "-w", WRITE_OUT,
                   "--max-time", f"{max_seconds:.0f}"]
        if not expect_100:
            # An empty Expect header stops curl from waiting for 100 Continue, which is
            # what a throughput run wants; refusal runs measure both ways.
            command += ["-H", "Expect:"]
        if body == "raw":
            command += ["-X", "POST", "-T", str(source)]
        else:
            command += ["-F", f"file=@{source};filename={filename}"]
        command.append(url)
        self.command = command
        self.max_seconds = max_seconds
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> "CurlUpload":
        # curl leaves an old file in place when no body arrives; never read a stale one.
        self.response_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        return self

    def wait(self) -> UploadResult:
        assert self.process is not None, "start() first"
        out, err = _outputs(self.process, self.max_seconds + 10)
        try:
            code, total, sent = out.split()
            status, seconds, bytes_sent = int(code), float(total), int(float(sent))
        except ValueError:
            status, seconds, bytes_sent = 0, 0.0, 0
        return UploadResult(status, seconds, bytes_sent, _read_json(self.response_path),
                            err.strip())


def _outputs(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The process's stdout and stderr once it ends; killed if it runs past `timeout`."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class TusUpload:
    """One tus_client.py process; start it, then wait() for its result.

    `seconds` is the client's own time from the creation request to the last PATCH's
    answer (interpreter start-up excluded); `body` is the server's file record.
    """

    def __init__(self, port: int, creation_path: str, source: Path, patch_size: int,
                 max_seconds: float) -> None:
        self.command = [sys.executable, str(TUS_CLIENT), "--port", str(port),
                        "--path", creation_path, "--source", str(source),
                        "--patch-size", str(patch_size), "--max-seconds", f"{max_seconds:.0f}"]
        self.max_seconds = max_seconds
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> "TusUpload":
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        return self

    def wait(self) -> UploadResult:
        assert self.process is not None, "start() first"
        out, err = _outputs(self.process, self.max_seconds + 20)
        try:
            found = json.loads(out)
            return UploadResult(int(found["status"]), float(found["seconds"]),
                                int(found["bytes_sent"]), found["body"], found["error"])
        except (ValueError, KeyError, TypeError):
            return UploadResult(0, 0.0, 0, None, f"tus client failed: {err.strip()[-300:]}")


def upload_once(url: str, source: Path, body: str, response_path: Path,
                expect_100: bool = False, max_seconds: float = 600) -> UploadResult:
    return CurlUpload(url, source, body, response_path, expect_100, max_seconds).start().wait()


def tus_creation_path(port: int) -> str | None:
    """The path where OPTIONS answers with a Tus-Version header, or None (no tus)."""
    for path in ("/files", "/files/"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("OPTIONS", path, headers={"Tus-Resumable": "1.0.0"})
            response = connection.getresponse()
            response.read()
            if response.status < 300 and response.getheader("Tus-Version") is not None:
                return path
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
    return None
