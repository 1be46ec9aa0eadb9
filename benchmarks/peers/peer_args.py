"""The command line every peer takes: `--port P --dir D` (binds 127.0.0.1 only).

Each peer stays a standalone script; Python puts the script's folder on sys.path, so
they import this module directly.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PeerArgs:
    port: int
    directory: Path


def parse_peer_args(description: str) -> PeerArgs:
    """Parse `--port` and `--dir`, creating the upload folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    return PeerArgs(args.port, args.dir)
