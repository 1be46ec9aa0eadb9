"""Tiny real media files made with imageio-ffmpeg's bundled ffmpeg, plus impostors.

`generate_samples` writes every sample into a folder and returns {name: path}. The
bytes come from a real encoder and muxer, so detection is tested against what users
upload, not against hand-written headers. Impostors (a magic number followed by noise,
and common non-media files) are built in code.

`EXPECTED` says what each name must be detected as; `None` means it must be rejected.
A real file whose encoder the bundled ffmpeg lacks is left out of the returned dict
(tests skip it), so check which names came back.
"""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

# Short and small on purpose: the whole set must be made in a few seconds on 2 cores.
_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=0.6"]
_VIDEO = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=0.6"]
_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_BIG_ID3_COVER_BYTES = 220 * 1024


@dataclass(frozen=True)
class _Recipe:
    """One ffmpeg run: its output file name, arguments after the inputs, and encoders."""

    file_name: str
    inputs: list[str]
    arguments: list[str]
    encoders: frozenset[str]


_RECIPES: dict[str, _Recipe] = {
    "mp3_id3": _Recipe(
        "tone.mp3", _AUDIO,
        ["-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "3",
         "-metadata", "title=Tone", "-f", "mp3"],
        frozenset({"libmp3lame"}),
    ),
    "mp3_no_id3": _Recipe(
        "bare.mp3", _AUDIO,
        ["-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "0", "-write_xing", "0",
         "-f", "mp3"],
        frozenset({"libmp3lame"}),
    ),
    # MPEG-2 layer III frames start FF F3, which puremagic 1.30 does not know.
    "mp3_mpeg2_22khz": _Recipe(
        "mpeg2.mp3", _AUDIO,
        ["-c:a", "libmp3lame", "-ar", "22050", "-b:a", "32k", "-id3v2_version", "0",
         "-write_xing", "0", "-f", "mp3"],
        frozenset({"libmp3lame"}),
    ),
    "mp3_mpeg25_8khz": _Recipe(
        "mpeg25.mp3", _AUDIO,
        ["-c:a", "libmp3lame", "-ar", "8000", "-b:a", "16k", "-id3v2_version", "0",
         "-write_xing", "0", "-f", "mp3"],
        frozenset({"libmp3lame"}),
    ),
    # The cover image (written by generate_samples) makes the ID3 tag > 200 KiB, as
    # album art does, so the first MPEG frame lies far beyond the first read.
    "mp3_big_id3": _Recipe(
        "cover.mp3", [*_AUDIO, "-i", "{cover}"],
        ["-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-b:a", "64k", "-c:v", "copy",
         "-disposition:v:0", "attached_pic", "-id3v2_version", "3", "-f", "mp3"],
        frozenset({"libmp3lame"}),
    ),
    "mp2_layer2": _Recipe(
        "tone.mp2", _AUDIO, ["-c:a", "mp2", "-b:a", "64k", "-f", "mp2"], frozenset({"mp2"}),
    ),
    "wav": _Recipe(
        "tone.wav", _AUDIO, ["-c:a", "pcm_s16le", "-f", "wav"], frozenset({"pcm_s16le"}),
    ),
    "flac": _Recipe(
        "tone.flac", _AUDIO, ["-c:a", "flac", "-f", "flac"], frozenset({"flac"}),
    ),
    # Cover art makes a PICTURE metadata block of ~215 KiB between STREAMINFO and audio.
    "flac_cover": _Recipe(
        "cover.flac", [*_AUDIO, "-i", "{cover}"],
        ["-map", "0:a", "-map", "1:v", "-c:a", "flac", "-c:v", "copy",
         "-disposition:v:0", "attached_pic", "-f", "flac"],
        frozenset({"flac"}),
    ),
    "ogg_vorbis": _Recipe(
        "vorbis.ogg", _AUDIO, ["-c:a", "libvorbis", "-f", "ogg"], frozenset({"libvorbis"}),
    ),
    "ogg_opus": _Recipe(
        "opus.ogg", _AUDIO, ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
        frozenset({"libopus"}),
    ),
    "ogg_flac": _Recipe(
        "flac.ogg", _AUDIO, ["-c:a", "flac", "-f", "ogg"], frozenset({"flac"}),
    ),
    "mp4": _Recipe(
        "clip.mp4", [*_VIDEO, *_AUDIO],
        [*_H264, "-c:a", "aac", "-b:a", "32k", "-f", "mp4"],
        frozenset({"libx264", "aac"}),
    ),
    "m4a": _Recipe(
        "tone.m4a", _AUDIO, ["-c:a", "aac", "-b:a", "32k", "-f", "ipod"], frozenset({"aac"}),
    ),
    "mov": _Recipe(
        "clip.mov", [*_VIDEO, *_AUDIO],
        [*_H264, "-c:a", "aac", "-b:a", "32k", "-f", "mov"],
        frozenset({"libx264", "aac"}),
    ),
    "webm": _Recipe(
        "clip.webm", [*_VIDEO, *_AUDIO],
        ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "64k",
         "-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
        frozenset({"libvpx", "libopus"}),
    ),
    "mkv": _Recipe(
        "clip.mkv", [*_VIDEO, *_AUDIO],
        [*_H264, "-c:a", "flac", "-f", "matroska"],
        frozenset({"libx264", "flac"}),
    ),
    "mka_audio_only": _Recipe(
        "tone.mka", _AUDIO, ["-c:a", "libvorbis", "-f", "matroska"], frozenset({"libvorbis"}),
    ),
    "3gp": _Recipe(
        "clip.3gp", [*_VIDEO, *_AUDIO],
        [*_H264, "-c:a", "aac", "-b:a", "32k", "-f", "3gp"],
        frozenset({"libx264", "aac"}),
    ),
    "aac_adts": _Recipe(
        "tone.aac", _AUDIO, ["-c:a", "aac", "-b:a", "32k", "-f", "adts"], frozenset({"aac"}),
    ),
}

def _noise(size: int, seed: int) -> bytes:
    """Reproducible noise: the same impostor bytes on every run."""
    return random.Random(seed).randbytes(size)


def _png(width: int, height: int, pixels: bytes, level: int) -> bytes:
    """A valid RGB PNG; level 0 keeps noise pixels at full size (for the big cover)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    row = width * 3
    scanlines = b"".join(b"\x00" + pixels[y * row:(y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(scanlines, level)) + chunk(b"IEND", b""))


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a recording\n" * 50)
    return buffer.getvalue()


def _impostors() -> dict[str, bytes]:
    """Each accepted format's magic number followed by noise, and everyday non-media."""
    tail = 8192
    with open(sys.executable, "rb") as executable:
        elf = executable.read(8192)
    return {
        "impostor_id3": b"ID3" + _noise(tail, 1),
        "impostor_mpeg_sync": b"\xff\xfb" + _noise(tail, 2),
        "impostor_adts_sync": b"\xff\xf1" + _noise(tail, 3),
        "impostor_ogg": b"OggS" + _noise(tail, 4),
        "impostor_flac": b"fLaC" + _noise(tail, 5),
        "impostor_ftyp_isom": b"\x00\x00\x00 ftypisom" + _noise(tail, 6),
        "impostor_ebml": b"\x1a\x45\xdf\xa3" + _noise(tail, 7),
        "impostor_riff_wave": b"RIFF" + struct.pack("<I", tail + 4) + b"WAVE" + _noise(tail, 8),
        "impostor_text": b"Meeting notes\n\nThis is only text, no audio.\n" * 100,
        "impostor_zip": _zip(),
        "impostor_png": _png(4, 4, _noise(48, 9), 9),
        "impostor_elf": elf,
        "impostor_zeros": bytes(8192),
        "impostor_random": _noise(8192, 10),
        "impostor_empty": b"",
    }


_IMPOSTOR_NAMES = (
    "impostor_id3", "impostor_mpeg_sync", "impostor_adts_sync", "impostor_ogg",
    "impostor_flac", "impostor_ftyp_isom", "impostor_ebml", "impostor_riff_wave",
    "impostor_text", "impostor_zip", "impostor_png", "impostor_elf", "impostor_zeros",
    "impostor_random", "impostor_empty",
)


# What each sample must come out as; None: it must be Rejected.
EXPECTED: Mapping[str, str | None] = {
    "mp3_id3": "mp3",
    "mp3_no_id3": "mp3",
    "mp3_mpeg2_22khz": "mp3",
    "mp3_mpeg25_8khz": "mp3",
    "mp3_big_id3": "mp3",
    "mp2_layer2": "mp3",  # MPEG audio layer II is audio/mpeg too
    "wav": "wav",
    "flac": "flac",
    "flac_cover": "flac",
    "ogg_vorbis": "ogg",
    "ogg_opus": "ogg",
    "ogg_flac": "ogg",
    "mp4": "mp4",
    "m4a": "m4a",
    "mov": "mov",
    "webm": "webm",
    "mkv": "mkv",
    "mka_audio_only": "mkv",
    "3gp": None,
    "aac_adts": None,
    **{name: None for name in _IMPOSTOR_NAMES},
}


def _available_encoders(ffmpeg: str) -> frozenset[str]:
    listing = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-encoders"],
        capture_output=True, text=True, check=True,
    ).stdout
    # Lines look like " A....D libmp3lame   libmp3lame MP3 ..."; the 2nd word is the name.
    return frozenset(words[1] for words in map(str.split, listing.splitlines())
                     if len(words) > 1 and len(words[0]) == 6)


def generate_samples(directory: Path) -> dict[str, Path]:
    """Write every sample the bundled ffmpeg can make, and every impostor, into `directory`."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    encoders = _available_encoders(ffmpeg)
    cover = directory / "cover.png"
    side = 270  # 270 * 270 * 3 bytes of noise, stored uncompressed: about 215 KiB
    cover.write_bytes(_png(side, side, _noise(side * side * 3, 11), 0))
    assert cover.stat().st_size >= _BIG_ID3_COVER_BYTES * 0.95

    def make(name: str, recipe: _Recipe) -> tuple[str, Path]:
        output = directory / recipe.file_name
        inputs = [part.format(cover=cover) for part in recipe.inputs]
        subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-threads", "1", *inputs,
             "-shortest", *recipe.arguments, "-bitexact", str(output)],
            check=True, capture_output=True, timeout=60,
        )
        return name, output

    makeable = {name: recipe for name, recipe in _RECIPES.items() if recipe.encoders <= encoders}
    with ThreadPoolExecutor(max_workers=2) as pool:
        samples = dict(pool.map(lambda item: make(*item), makeable.items()))
    impostors = _impostors()
    assert impostors.keys() == set(_IMPOSTOR_NAMES)
    for name, content in impostors.items():
        path = directory / f"{name}.bin"
        path.write_bytes(content)
        samples[name] = path
    return samples
