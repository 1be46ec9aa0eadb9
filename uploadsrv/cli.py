"""The `uploadsrv` command: read the config, then serve until SIGTERM or SIGINT.

Owns the process: arguments, logging, the allocator settings, the number of worker
processes, the choice of listening socket (systemd socket activation wins over host and
port), the metrics folder the workers share, and the exit status (2 for a bad config, 1
for a start-up fault, 0 after a drain). The run itself (signals, drain, sd_notify) is
server.py's for a single process, workers.py's supervisor's for several.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .allocator import tune_for_streaming
from .config import Config, ConfigError, load_config
from .config_values import MAX_WORKERS
from .logs import configure as configure_logging

# Nothing that imports prometheus_client may be imported at module level here: it picks
# its single- or multi-process mode once, when first imported, from
# PROMETHEUS_MULTIPROC_DIR, which main() sets only once it knows how many workers run.
# server, workers and app (through appkeys and metrics) all import it, so _run imports
# them late.

SD_LISTEN_FDS_START = 3
MAX_AUTO_WORKERS = 8
LISTEN_BACKLOG = 128  # aiohttp's default
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METRICS_FOLDER_PREFIX = "uploadsrv-metrics-"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="uploadsrv", description="Streaming upload server for audio and video. "
        "`uploadsrv upload FILE... --url URL` uploads files to one (see `uploadsrv upload --help`).")
    parser.add_argument("--config", type=Path, help="config.toml (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--host", help="address to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    parser.add_argument("--workers", type=int, choices=range(MAX_WORKERS + 1), metavar=f"0-{MAX_WORKERS}",
                        help="worker processes (overrides server.workers; 0 = one per usable core, at most 8)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser.parse_args(argv)


def _version() -> str:
    # The installed distribution's metadata is the one place the version is written
    # (setup.cfg); a source tree run without installing has none.
    try:
        return importlib.metadata.version("uploadsrv")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def systemd_socket() -> socket.socket | None:
    """The socket systemd passed us (LISTEN_FDS), if it is meant for this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port, one per address, as asyncio's create_server makes
    them for the single process; its OSError is worded the same way."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
                socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                raise OSError(error.errno, f"error while attempting to bind on address {address!r}: "
                                           f"{(error.strerror or '').lower()}") from None
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def worker_count(configured: int) -> int:
    """`server.workers`, with 0 resolved to one per core this process may run on, at most 8."""
    if configured:
        return configured
    return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "upload":
        from . import uploader  # the client's imports are no business of the server's

        return uploader.main(argv[1:])
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    config = _with_overrides(config, args.host, args.port, args.workers)
    count = worker_count(config.server.workers)
    configure_logging(config.logging, with_pid=count > 1)
    if not tune_for_streaming():
        logging.getLogger("uploadsrv").info("C library without glibc's mallopt: default allocator settings")
    with _metrics_folder(count):
        return _run(config, count)


def _run(config: Config, count: int) -> int:
    # Imported here, after _metrics_folder: see the note at the top.
    from .app import create_app
    from .server import StartupError, serve
    from .workers import Supervisor

    sock = systemd_socket()
    try:
        if count == 1:
            asyncio.run(serve(create_app(config), config.server, [sock] if sock else []))
            return 0
        try:
            sockets = [sock] if sock else bind_listeners(config.server.host, config.server.port)
        except OSError as error:  # the port is taken, the host has no such address, ...
            raise StartupError(str(error)) from None
        # A dead worker's live gauges (uploads in flight) must stop counting.
        from prometheus_client import multiprocess
        return Supervisor(config, sockets, count, lambda active: create_app(config, active),
                          on_worker_exit=multiprocess.mark_process_dead).run()
    except StartupError as error:
        # Start-up faults (port taken, storage folders unusable) are one line, not a traceback.
        print(f"uploadsrv: cannot start: {error}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _metrics_folder(count: int) -> Iterator[None]:
    """With several workers, a fresh folder for their prometheus_client files (it must start
    empty), named in PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client, and
    removed at exit. One process keeps its metrics in memory."""
    if count == 1:
        yield
        return
    _sweep_metrics_folders(Path(tempfile.gettempdir()))
    folder = tempfile.mkdtemp(prefix=f"{METRICS_FOLDER_PREFIX}{os.getpid()}-")
    os.environ[METRICS_DIR_VARIABLE] = folder
    try:
        yield
    finally:
        os.environ.pop(METRICS_DIR_VARIABLE, None)
        shutil.rmtree(folder, ignore_errors=True)


def _sweep_metrics_folders(parent: Path) -> None:
    """Remove the folders of servers that ended without removing theirs (kill -9); the pid
    in the name says whose it is. (Under systemd, PrivateTmp= clears them anyway.)"""
    for folder in parent.glob(f"{METRICS_FOLDER_PREFIX}*-*"):
        owner = folder.name.removeprefix(METRICS_FOLDER_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _running(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def _with_overrides(config: Config, host: str | None, port: int | None, workers: int | None) -> Config:
    server = config.server
    if host is not None:
        server = dataclasses.replace(server, host=host)
    if port is not None:
        server = dataclasses.replace(server, port=port)
    if workers is not None:
        server = dataclasses.replace(server, workers=workers)
    return dataclasses.replace(config, server=server)
