"""The upload clients: curl for one-shot uploads, a small tus client for PATCH uploads.

Owns building the curl command lines (multipart `-F` for multipart servers, `-T` for the
raw peer), starting them, and reading back status, time_total and size_upload. The tus
client sends each PATCH with sendfile() over one keep-alive connection. Every call has a
time limit. Does not start servers or measure them.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRITE_OUT = "%{http_code} %{time_total} %{size_upload}"


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
        try:
            out, err = self.process.communicate(timeout=self.max_seconds + 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        try:
            code, total, sent = out.split()
            status, seconds, bytes_sent = int(code), float(total), int(float(sent))
        except ValueError:
            status, seconds, bytes_sent = 0, 0.0, 0
        return UploadResult(status, seconds, bytes_sent, _read_json(self.response_path),
                            err.strip())


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


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


def tus_upload(port: int, creation_path: str, source: Path, patch_size: int,
               max_seconds: float) -> UploadResult:
    """Create a tus upload of the whole file, then PATCH it in patch_size pieces."""
    size = source.stat().st_size
    deadline = time.monotonic() + max_seconds
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=max_seconds)
    started = time.perf_counter()
    sent = 0
    try:
        name = base64.b64encode(b"x.mp3").decode()
        connection.request("POST", creation_path, headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(size),
            "Upload-Metadata": f"filename {name}", "Content-Length": "0"})
        response = connection.getresponse()
        response.read()
        location = response.getheader("Location")
        if response.status != 201 or not location:
            return UploadResult(response.status, time.perf_counter() - started, 0, None,
                                "creation refused")
        path = urlsplit(location).path
        offset, status = 0, 201
        with source.open("rb") as data:
            while offset < size and time.monotonic() < deadline:
                count = min(patch_size, size - offset)
                connection.putrequest("PATCH", path, skip_accept_encoding=True)
                for header, value in (("Tus-Resumable", "1.0.0"),
                                      ("Content-Type", "application/offset+octet-stream"),
                                      ("Upload-Offset", str(offset)),
                                      ("Content-Length", str(count))):
                    connection.putheader(header, value)
                connection.endheaders()
                assert connection.sock is not None
                # sendfile: the kernel copies from the page cache, the client costs ~nothing.
                sent += connection.sock.sendfile(data, offset, count)
                response = connection.getresponse()
                response.read()
                status = response.status
                new_offset = response.getheader("Upload-Offset")
                if status != 204 or new_offset is None or int(new_offset) != offset + count:
                    return UploadResult(status, time.perf_counter() - started, sent, None,
                                        f"PATCH at {offset} answered {status}, offset {new_offset}")
                offset += count
        seconds = time.perf_counter() - started
        error = "" if offset == size else "time limit reached"
        return UploadResult(status, seconds, sent, {"url": path}, error)
    except (OSError, http.client.HTTPException) as problem:
        return UploadResult(0, time.perf_counter() - started, sent, None, repr(problem))
    finally:
        connection.close()
