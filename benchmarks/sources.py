"""The files the benchmark uploads, made once and kept in benchmarks/.venv/cache/.

Owns making them and knowing their SHA-256. A media source starts with a real one-second
MP3 (ID3 tag and MPEG frames, encoded by imageio-ffmpeg's ffmpeg) and continues with
random bytes up to its size, so every server's type check sees a genuine MP3 while the
payload does not compress. A wrong-type source is random bytes from its first byte.
Does not start servers or measure anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4 * 1024 * 1024  # os.urandom block size: large enough to be fast, small in memory


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size: int
    sha256: str


def _ffmpeg() -> str:
    import imageio_ffmpeg  # only in the bench venv

    return imageio_ffmpeg.get_ffmpeg_exe()


def media_header(cache: Path) -> bytes:
    """A real one-second MP3 (ID3v2 tag and frames), made once by ffmpeg."""
    path = cache / "header-1s.mp3"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part.mp3")
        subprocess.run(
            [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
             "-c:a", "libmp3lame", "-b:a", "64k",
             "-metadata", "title=uploadsrv benchmark", str(partial)],
            check=True, timeout=60,
        )
        partial.replace(path)
    header = path.read_bytes()
    if not header.startswith(b"ID3"):
        raise RuntimeError(f"{path} does not start with an ID3 tag")
    return header


def _write(path: Path, size: int, prefix: bytes) -> SourceFile:
    """Write prefix + random bytes up to size, then a .sha256 sidecar; both atomic."""
    digest = hashlib.sha256()
    partial = path.with_name(path.name + ".part")
    with partial.open("wb") as out:
        head = prefix[:size]
        out.write(head)
        digest.update(head)
        remaining = size - len(head)
        while remaining > 0:
            block = os.urandom(min(BLOCK, remaining))
            out.write(block)
            digest.update(block)
            remaining -= len(block)
    partial.replace(path)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.write_text(digest.hexdigest())
    return SourceFile(path, size, digest.hexdigest())


def _cached(path: Path, size: int) -> SourceFile | None:
    sidecar = path.with_name(path.name + ".sha256")
    # The sidecar is written after the file is complete, so its presence means whole.
    if path.exists() and sidecar.exists() and path.stat().st_size == size:
        return SourceFile(path, size, sidecar.read_text().strip())
    return None


def media_source(cache: Path, size: int) -> SourceFile:
    """An MP3 of `size` bytes: real header and frames, then random bytes."""
    path = cache / f"media-{size}.mp3"
    return _cached(path, size) or _write(path, size, media_header(cache))


def wrong_type_source(cache: Path, size: int) -> SourceFile:
    """`size` random bytes: no allowed media type can be found in them."""
    path = cache / f"random-{size}.bin"
    return _cached(path, size) or _write(path, size, b"")


def bytes_needed(cache: Path, size: int, kind: str = "media") -> int:
    """Disk bytes still to write for this source (0 when it is cached)."""
    name = f"media-{size}.mp3" if kind == "media" else f"random-{size}.bin"
    return 0 if _cached(cache / name, size) else size


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def sha256_of(path: Path) -> str:
    """Hash a stored file; 4 MiB reads release the GIL inside hashlib."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
