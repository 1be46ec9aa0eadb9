"""The `uploadsrv` command: read the config, then serve until SIGTERM or SIGINT.

Owns the process: arguments, logging, the allocator settings, the choice of listening
socket (systemd socket activation wins over host and port), and the exit status (2 for
a bad config, 1 for a start-up fault, 0 after a drain). The run itself (signals, drain,
sd_notify) is server.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import logging
import os
import socket
import sys
from pathlib import Path

from .allocator import tune_for_streaming
from .app import create_app
from .config import Config, ConfigError, load_config
from .server import StartupError, serve

SD_LISTEN_FDS_START = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uploadsrv", description="Streaming upload server for audio and video.")
    parser.add_argument("--config", type=Path, help="config.toml (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--host", help="address to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    config = _with_overrides(config, args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not tune_for_streaming():
        logging.getLogger("uploadsrv").info("C library without glibc's mallopt: default allocator settings")
    app = create_app(config)
    try:
        asyncio.run(serve(app, config.server, systemd_socket()))
    except StartupError as error:
        # Start-up faults (port taken, storage folders unusable) are one line, not a traceback.
        print(f"uploadsrv: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _with_overrides(config: Config, host: str | None, port: int | None) -> Config:
    server = config.server
    if host is not None:
        server = dataclasses.replace(server, host=host)
    if port is not None:
        server = dataclasses.replace(server, port=port)
    return dataclasses.replace(config, server=server)
