"""MPEG audio (mp3, and layer I/II) from its first bytes: optional ID3v2 tags, then
frame headers that chain.

Pure, like `container_checks` (whose `Head`, `NotMedia` and `NeedBytes` it shares):
`check_mpeg_audio` returns "mp3", raises `NotMedia` with a reason, or `NeedBytes`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .container_checks import Head, NeedBytes, NotMedia, check_flac

_FRAMES_TO_CHAIN = 3
_ID3_FLAGS = {2: 0x80, 3: 0xE0, 4: 0xF0}  # defined flag bits per major version
_ID3_FOOTER, _ID3_EXTENDED, _ID3_UNSYNC = 0x10, 0x40, 0x80
_ID3_FRAME_ID_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# kbit/s by (MPEG-1?, layer), index 1..14 (0 is free format, 15 is invalid).
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class _Frame:
    stream: tuple[int, int, int]  # version, layer, sample rate: fixed within a stream
    length: int


def _mpeg_frame(data: bytes, at: int) -> _Frame | None:
    """The MPEG audio frame header at `at`, or None if those 4 bytes are not one."""
    b1, b2, b3 = data[at + 1], data[at + 2], data[at + 3]
    version, layer = (b1 >> 3) & 3, 4 - ((b1 >> 1) & 3)  # layer field 3,2,1 means I,II,III
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if (data[at] != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer == 4
            or bitrate_index in (0, 15) or rate_index == 3 or b3 & 3 == 2):
        return None
    mpeg1 = version == 3
    bitrate = _BITRATES[mpeg1, layer][bitrate_index - 1] * 1000
    rate = _SAMPLE_RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:  # layer III outside MPEG-1 carries half the samples per frame
        length = (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding
    return _Frame((version, layer, rate), length)


def _is_adts(data: bytes, at: int) -> bool:
    # ADTS AAC shares the 12-bit sync but has layer bits 00.
    return data[at] == 0xFF and data[at + 1] & 0xF6 == 0xF0


def _syncsafe(four: bytes) -> int | None:
    if any(byte & 0x80 for byte in four):
        return None
    return four[0] << 21 | four[1] << 14 | four[2] << 7 | four[3]


def _id3_tag_end(head: Head, start: int) -> int:
    """Validate the ID3v2 header at `start`; return the offset just past the tag."""
    head.need(start + 10, "the ID3 tag header")
    major, revision, flags = head.data[start + 3:start + 6]
    size = _syncsafe(head.data[start + 6:start + 10])
    if major not in _ID3_FLAGS or revision == 0xFF or flags & ~_ID3_FLAGS[major] or size is None:
        raise NotMedia("it starts with 'ID3' but not with a valid ID3v2 tag header")
    return start + 10 + size + (10 if flags & _ID3_FOOTER else 0)


def _check_id3_frames(head: Head, start: int) -> None:
    """The tag's frames chain from frame to frame up to the padding, the tag's end or
    the limit. Unsynchronised v2.2/2.3 tags count sizes after decoding: not checked."""
    data = head.data
    major, flags = data[start + 3], data[start + 5]
    if major < 4 and flags & _ID3_UNSYNC:
        return
    tag_end = _id3_tag_end(head, start) - (10 if flags & _ID3_FOOTER else 0)
    at = start + 10
    if flags & _ID3_EXTENDED:
        head.need(at + 4, "the ID3 extended header")
        extended = (_syncsafe(data[at:at + 4]) if major == 4
                    else struct.unpack_from(">I", data, at)[0] + 4)
        if extended is None or extended < 6:
            raise NotMedia("its ID3 extended header is malformed")
        at += extended
    id_length, header_length = (3, 6) if major == 2 else (4, 10)
    frames = 0
    while at + header_length <= min(tag_end, head.limit):
        head.need(at + header_length, "the ID3 frame headers")
        if data[at] == 0:  # padding: no frame follows
            break
        frame_id, raw_size = data[at:at + id_length], data[at + id_length:at + 2 * id_length]
        size = int.from_bytes(raw_size, "big")
        if major == 4:  # syncsafe, but iTunes long wrote plain integers here
            size = _syncsafe(raw_size) or size
        if not all(byte in _ID3_FRAME_ID_BYTES for byte in frame_id):
            raise NotMedia("its ID3 tag holds a malformed frame")
        at += header_length + size
        if at > tag_end:
            raise NotMedia("an ID3 frame runs past the end of its tag")
        frames += 1
    if frames == 0:
        raise NotMedia("its ID3 tag holds no frames")


def _skip_zeros(head: Head, at: int) -> int:
    """Some taggers pad past the declared tag size with zero bytes; skip them."""
    head.need(at + 1, "the audio after the ID3 tag")
    rest = head.data[at:].lstrip(b"\0")
    if rest:
        return len(head.data) - len(rest)
    if head.at_end:
        raise NotMedia("only zero bytes follow its ID3 tag")
    # Ask in steps rather than byte by byte, and not past the limit while below it.
    have = len(head.data)
    raise NeedBytes(max(have + 1, min(head.limit, have + 4096)), "the audio after the ID3 tag")


def _check_frame_chain(head: Head, start: int, tagged: bool) -> None:
    data = head.data
    head.need(start + 4, "the first MPEG audio frame")
    first = _mpeg_frame(data, start)
    if first is None:
        if _is_adts(data, start):
            raise NotMedia("it is raw AAC (ADTS), not MP3; AAC is accepted inside .m4a or .mp4")
        if tagged:
            raise NotMedia("it starts with an ID3 tag but no MPEG audio frames follow it")
        raise NotMedia("it starts with an MPEG sync word but not a valid MPEG audio frame")
    at, frame = start, first
    for count in range(1, _FRAMES_TO_CHAIN + 1):
        at += frame.length
        if head.at_end and at == len(data) and count >= _FRAMES_TO_CHAIN:
            return
        head.need(at + 4, "the first MPEG audio frames")
        following = _mpeg_frame(data, at)
        if following is None or following.stream != first.stream:
            raise NotMedia(f"its MPEG audio frames do not chain (frame {count + 1} is not "
                           f"where frame {count} ends)")
        frame = following


def check_mpeg_audio(head: Head) -> str:
    """Optional ID3v2 tags, then 3 whole MPEG audio frames, each where the last ends.

    When the tags (album art) push the audio past `head.limit`, the tags decide alone:
    valid headers whose frames chain over the bytes within the limit. A FLAC stream
    behind an ID3 tag (some taggers do this) is checked as FLAC.
    """
    data, at, tags = head.data, 0, []
    try:
        head.need(3, "the start of the file")
        while data[at:at + 3] == b"ID3":
            tags.append(at)
            at = _skip_zeros(head, _id3_tag_end(head, at))
            head.need(at + 4, "the audio after the ID3 tag")
        if data[at:at + 4] == b"fLaC":
            return check_flac(head, at)
        _check_frame_chain(head, at, tagged=bool(tags))
    except NeedBytes as short:
        if head.at_end or not tags or short.end <= head.limit:
            raise
        for start in tags:
            _check_id3_frames(head, start)
    return "mp3"
