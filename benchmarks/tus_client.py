#!/usr/bin/env python3
"""The benchmark's tus client, run as its own process so that it is a client like curl.

    python3 tus_client.py --port P --path /files --source FILE --patch-size N --max-seconds S

Creates an upload of the whole file with `POST <path>` (Upload-Length, a file name in
Upload-Metadata), then sends it in --patch-size PATCHes, one after the other, over the
same keep-alive connection, each body with sendfile() straight from the page cache.
The time runs from the creation request to the last PATCH's answer. Then, untimed,
`GET /files/<id>/info` fetches the server's record (size, sha256) for the integrity
check. Prints one JSON object: status, seconds, bytes_sent, body (the record), error.
Standard library only; it starts no server and measures nothing else. It runs on the
CPUs the benchmark process pinned itself to (a child inherits its parent's affinity).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def _result(status: int, seconds: float, sent: int, body: dict | None,
            error: str = "") -> dict:
    return {"status": status, "seconds": seconds, "bytes_sent": sent, "body": body,
            "error": error}


def _record(connection: http.client.HTTPConnection, path: str) -> tuple[dict | None, str]:
    """The file record at <path>/info, or None and why not."""
    connection.request("GET", f"{path}/info")
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        return None, f"GET {path}/info answered {response.status}"
    try:
        record = json.loads(data)
    except ValueError:
        return None, f"GET {path}/info answered no JSON"
    return (record, "") if isinstance(record, dict) else (None, "record is not an object")


def tus_upload(port: int, creation_path: str, source: Path, patch_size: int,
               max_seconds: float) -> dict:
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
            return _result(response.status, time.perf_counter() - started, 0, None,
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
                    return _result(status, time.perf_counter() - started, sent, None,
                                   f"PATCH at {offset} answered {status}, offset {new_offset}")
                offset += count
        seconds = time.perf_counter() - started
        if offset != size:
            return _result(status, seconds, sent, None, "time limit reached")
        record, error = _record(connection, path)
        return _result(status, seconds, sent, record, error)
    except (OSError, http.client.HTTPException) as problem:
        return _result(0, time.perf_counter() - started, sent, None, repr(problem))
    finally:
        connection.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/files", help="the tus creation path")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--patch-size", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args(argv)
    result = tus_upload(args.port, args.path, args.source, args.patch_size, args.max_seconds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
