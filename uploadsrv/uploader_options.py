"""The command line of `uploadsrv upload`: files, server URL, token, PATCH size, files at
once, retries, where upload URLs are remembered, progress bars; checked into `Options`.

Pure apart from reading the environment's token and checking that each file exists;
knows nothing of tus or HTTP.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import yarl

from .config_values import parse_size
from .uploader_state import default_state_path

MiB = 1 << 20
DEFAULT_CHUNK_SIZE = 8 * MiB


@dataclass(frozen=True)
class Options:
    files: tuple[Path, ...]
    endpoint: yarl.URL
    token: str | None
    chunk_size: int
    parallel: int
    retries: int
    state: Path
    progress: bool | None  # None: bars only when stderr is a terminal


def tus_endpoint(url: str) -> yarl.URL:
    """The creation URL: `/files/` under the server's URL, unless the URL already names it."""
    parsed = yarl.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"--url must be an http:// or https:// URL, not {url!r}")
    path = parsed.path.rstrip("/")
    return parsed.with_path(path + "/" if path.endswith("/files") else path + "/files/")


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="uploadsrv upload", description="Upload files to uploadsrv over tus; "
                                     "run the same command again to resume an interrupted upload.")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="bearer token (default: $UPLOADSRV_TOKEN)")
    parser.add_argument("--chunk-size", default=DEFAULT_CHUNK_SIZE, type=_size, help="bytes per PATCH (default 8MiB)")
    parser.add_argument("--parallel", default=4, type=_count, help="files at once (default 4)")
    parser.add_argument("--retries", default=10, type=int, help="tries in a row without progress (default 10)")
    parser.add_argument("--state", type=Path, help=f"where upload URLs are remembered (default {default_state_path()})")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bars (they are off anyway when stderr is not a terminal)")
    args = parser.parse_args(argv)
    try:
        endpoint = tus_endpoint(args.url)
    except ValueError as error:
        parser.error(str(error))
    files: dict[Path, Path] = {}
    for file in args.files:
        if not file.is_file():
            parser.error(f"{file}: not a readable regular file")
        files.setdefault(file.resolve(), file)  # the same file named twice is uploaded once
    return Options(tuple(files.values()), endpoint, args.token or os.environ.get("UPLOADSRV_TOKEN") or None,
                   args.chunk_size, args.parallel, max(args.retries, 0), args.state or default_state_path(),
                   args.progress)


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if size < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return size


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)
