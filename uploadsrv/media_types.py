"""What a file is, decided from its first bytes: the media types we know and `detect`.

Owns the nine media types and the decision between them. Pure: no I/O, no aiohttp, no
state; it never sees, and so can never trust, the client's file name or Content-Type.

The rule: the bytes decide, by structure, not by magic number alone.

1. puremagic gives the first opinion (`magic_string` on the head, never a filename).
   Its candidate extensions map to our container families (MPEG audio, WAVE, FLAC,
   Ogg, ISO-BMFF, EBML), and those families are tried first.
2. A family's structural check runs only when the file starts with that family's own
   signature, and it alone decides (`container_checks`). puremagic only proves that a
   magic number is present, and its labels change between versions, so its opinion
   never accepts anything. It also misses legitimate files (MPEG-2/2.5 and layer II
   frames such as `FF F3`, `FF E3`, `FF FD`; some ftyp brands when the head is short),
   so every family whose signature matches is checked whether puremagic named it
   or not. When no family matches, its top guess names the file in the refusal.
3. ISO media is told apart by its major brand (m4a and mov are never mp4), EBML by its
   DocType (mkv is never webm); 3GP, HEIF, AVIF and other brands are refused. Raw AAC
   (ADTS) is refused: it is not MP3.

Album art can make an ID3v2 tag far longer than we will buffer. Within
`MAX_SNIFF_BYTES`, the MPEG frames after the tag decide. When the tag pushes the frames
beyond it, the file is accepted on a structurally valid ID3 tag whose frames chain
correctly over the bytes within `MAX_SNIFF_BYTES` (the audio itself is then unseen).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import puremagic

from uploadsrv.mpeg_audio import check_mpeg_audio
from uploadsrv.container_checks import (
    Head,
    NeedBytes,
    NotMedia,
    check_ebml,
    check_flac,
    check_iso_bmff,
    check_ogg,
    check_wave,
)


@dataclass(frozen=True)
class MediaType:
    """A type we can report: its short name (the allow-list key) and its MIME type."""

    name: str
    mime: str


KNOWN_TYPES: Mapping[str, MediaType] = MappingProxyType({
    media.name: media for media in (
        MediaType("mp3", "audio/mpeg"),
        MediaType("wav", "audio/wav"),
        MediaType("flac", "audio/flac"),
        MediaType("ogg", "audio/ogg"),
        MediaType("mp4", "video/mp4"),
        MediaType("m4a", "audio/mp4"),
        MediaType("mov", "video/quicktime"),
        MediaType("webm", "video/webm"),
        MediaType("mkv", "video/x-matroska"),
    )
})

MAX_SNIFF_BYTES = 1024 * 1024  # covers typical album art; more would be buffered per upload


@dataclass(frozen=True)
class Detected:
    """The bytes are this type."""

    media: MediaType


@dataclass(frozen=True)
class NeedMore:
    """Call again once the head holds at least `total` bytes."""

    total: int


@dataclass(frozen=True)
class Rejected:
    """The bytes are not a type we know; `reason` says why, for a person to act on."""

    reason: str


Detection = Detected | NeedMore | Rejected

# Enough for every family's signature (RIFF....WAVE is the longest).
_SIGNATURE_BYTES = 12
# puremagic reads at most ~36 KiB of head; our families show themselves far earlier.
_PUREMAGIC_BYTES = 8192


@dataclass(frozen=True)
class _Family:
    """A container family: puremagic's extensions for it, its signature, its check."""

    extensions: frozenset[str]
    starts: Callable[[bytes], bool]
    check: Callable[[Head], str]


def _starts_like_mpeg_audio(data: bytes) -> bool:
    # An ID3v2 tag, or the 11-bit frame sync (which ADTS AAC shares; the check refuses it).
    return data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF
                                       and data[1] & 0xE0 == 0xE0)


_FAMILIES: tuple[_Family, ...] = (
    _Family(frozenset({"mp3", "mpga", "mp2", "mp1", "mpa", "m2a", "mp2a", "aac", "koz"}),
            _starts_like_mpeg_audio, check_mpeg_audio),
    _Family(frozenset({"wav", "wave"}),
            lambda data: data[:4] in (b"RIFF", b"RF64"), check_wave),
    _Family(frozenset({"flac", "fla"}),
            lambda data: data.startswith(b"fLaC"), check_flac),
    _Family(frozenset({"ogg", "oga", "ogv", "ogx", "opus", "spx"}),
            lambda data: data.startswith(b"OggS"), check_ogg),
    _Family(frozenset({"mp4", "m4a", "m4b", "m4p", "m4v", "mov", "qt", "3gp", "3g2", "3gpp",
                       "3ga", "f4v", "f4a", "f4b", "f4p", "heic", "heif", "avif"}),
            lambda data: data[4:8] == b"ftyp", check_iso_bmff),
    _Family(frozenset({"webm", "mkv", "mka", "mks", "mk3d"}),
            lambda data: data.startswith(b"\x1a\x45\xdf\xa3"), check_ebml),
)


def _puremagic_opinion(head: bytes) -> tuple[list[_Family], str | None]:
    """Families puremagic proposes, best first, and its top guess if that is none of ours."""
    try:
        matches = puremagic.magic_string(head[:_PUREMAGIC_BYTES])
    except (puremagic.PureError, ValueError):  # no match at all, or empty input
        return [], None
    proposed: list[_Family] = []
    guess = None
    for rank, match in enumerate(matches):
        extension = match.extension.lstrip(".").lower()  # may be '' (ELF, matroska)
        families = [family for family in _FAMILIES if extension in family.extensions]
        proposed += [family for family in families if family not in proposed]
        if rank == 0 and not families:
            guess = match.name or None
    return proposed, guess


def _run_check(family: _Family, head: bytes, at_end: bool) -> Detection:
    try:
        name = family.check(Head(head, at_end, MAX_SNIFF_BYTES))
    except NotMedia as refusal:
        return Rejected(str(refusal))
    except NeedBytes as short:
        if at_end:
            return Rejected(f"the file ends inside {short.what}")
        if short.end > MAX_SNIFF_BYTES:
            return Rejected(f"could not find {short.what} within the first "
                            f"{MAX_SNIFF_BYTES // 1024} KiB")
        return NeedMore(short.end)
    return Detected(KNOWN_TYPES[name])


def detect(head: bytes, *, at_end: bool) -> Detection:
    """Decide what the bytes are from the first bytes of a file.

    `head` is the file's first bytes (the caller accumulates them); `at_end` is True when
    head is the whole file (never answer NeedMore then). The caller checks the allow-list.
    """
    if len(head) > MAX_SNIFF_BYTES:  # we decide on this much, however much is offered
        head, at_end = head[:MAX_SNIFF_BYTES], False
    if not head and at_end:
        return Rejected("the file is empty")
    if len(head) < _SIGNATURE_BYTES and not at_end:
        return NeedMore(_SIGNATURE_BYTES)
    proposed, guess = _puremagic_opinion(head)
    remaining = [family for family in _FAMILIES if family not in proposed]
    for family in [*proposed, *remaining]:
        if family.starts(head):
            return _run_check(family, head, at_end)
    if not head.strip(b"\0"):
        return Rejected("not a recognised audio or video file: its first bytes are all zero")
    if guess:
        return Rejected(f"not a recognised audio or video file; it looks like: {guess}")
    return Rejected("not a recognised audio or video file: "
                    "its first bytes match no audio or video format we know")
