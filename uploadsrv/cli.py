"""The `uploadsrv` command: read the config, then serve until SIGTERM or SIGINT.

Owns the process: arguments, logging, the allocator settings, the listening socket
(systemd socket activation wins over host and port), and the exit status (2 for a bad
config).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import sys
from pathlib import Path

from aiohttp import web

from .allocator import tune_for_streaming
from .app import create_app
from .config import Config, ConfigError, load_config

SD_LISTEN_FDS_START = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uploadsrv", description="Streaming upload server for audio and video.")
    parser.add_argument("--config", type=Path, help="config.toml (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--host", help="address to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    return parser.parse_args(argv)


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
    sock = systemd_socket()
    where = dict(sock=sock) if sock is not None else dict(host=config.server.host, port=config.server.port)
    # run_app handles SIGINT and SIGTERM (what systemd sends): stop accepting, give
    # requests shutdown_timeout, cancel the rest (their handlers remove their parts).
    try:
        web.run_app(
            app,
            shutdown_timeout=config.server.shutdown_timeout,
            access_log_format='%a "%r" %s %b %Tfs',
            print=lambda message: logging.getLogger("uploadsrv").info(message.strip()),
            **where,
        )
    except (OSError, RuntimeError) as error:
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
