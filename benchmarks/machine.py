"""The machine the benchmark runs on: describing it, and warming its memory.

Owns collecting cores, CPU model, RAM, kernel, Python, curl and package versions, the
date, and uploadsrv's git revision (read-only git commands), and touching memory once
before a full run (see warm_memory). Changes nothing on disk.
"""

from __future__ import annotations

import datetime
import mmap
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from environment import REPO_ROOT

PACKAGES = ("aiohttp", "streaming-form-data", "puremagic", "fastapi", "starlette", "uvicorn",
            "httptools", "uvloop", "python-multipart")


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10,
                              cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def describe() -> str:
    """Markdown lines: the machine, the software, the uploadsrv revision."""
    curl = " ".join(_first_line(["curl", "--version"]).split()[:2])
    revision = _first_line(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    if _first_line(["git", "status", "--porcelain", "--", "uploadsrv", "setup.cfg"]):
        revision += " + uncommitted changes"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    packages = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return (
        f"Machine: {os.cpu_count()} cores ({_cpu_model()}), {_memory_gib():.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, {curl}; {now}.  \n"
        f"uploadsrv at git {revision}; peers: {packages}."
    )


def warm_memory(size: int) -> float:
    """Touch `size` bytes of fresh memory once and free them; returns the seconds taken.

    On a newly booted VM the host backs guest memory lazily: here the first touch of a
    page cost about 3x a later one (3 GiB took 13.7 s, then 5.2 s and 4.5 s). Page-cache
    pages for stored uploads come from that memory, so without this the first runs of a
    fresh machine are slower than the rest, whichever server they belong to.
    """
    block = b"\x01" * (64 * 1024 * 1024)
    size -= size % len(block)
    started = time.monotonic()
    with mmap.mmap(-1, size) as memory:
        for offset in range(0, size, len(block)):
            memory[offset:offset + len(block)] = block
    return time.monotonic() - started
