"""Structural checks of a file's first bytes, one per container family.

Owns the byte-level parsing behind `uploadsrv.media_types.detect`: ISO-BMFF `ftyp`,
the EBML header, the first Ogg page, RIFF/WAVE `fmt ` and FLAC STREAMINFO (ID3v2 tags
and MPEG audio frames are in `mpeg_audio`). Pure: no I/O, no state, nothing but
`bytes` in.

Each `check_*` returns one of our type names, raises `NotMedia` with a reason a person
can act on, or raises `NeedBytes(end)` when it must see `data[:end]` to decide. A check
reads only offsets that follow from the bytes already read, so the answer depends on
the file alone, never on how far the caller's buffer happened to have grown.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class NotMedia(Exception):
    """The bytes do not hold the structure their signature promises; str() says why."""


class NeedBytes(Exception):
    """The check must see `data[:end]`; `what` names the structure it was reading."""

    def __init__(self, end: int, what: str) -> None:
        super().__init__(end, what)
        self.end = end
        self.what = what


@dataclass(frozen=True)
class Head:
    """The first bytes of a file and what may still be asked for."""

    data: bytes
    at_end: bool  # data is the whole file
    limit: int  # a check may never need more than this many bytes

    def need(self, end: int, what: str) -> None:
        if len(self.data) < end:
            raise NeedBytes(end, what)


def _printable(code: bytes) -> bool:
    # Four-character codes (boxes, brands, chunks) are ASCII text; noise rarely is.
    return all(0x20 <= byte <= 0x7E for byte in code)


# --- ISO base media (mp4, m4a, mov) --------------------------------------------------

_BRANDS: dict[bytes, str] = {
    **dict.fromkeys([b"M4A ", b"M4B ", b"M4P "], "m4a"),
    b"qt  ": "mov",
    **dict.fromkeys(
        [b"isom", *(b"iso%d" % n for n in range(2, 10)), b"mp41", b"mp42", b"avc1", b"dash",
         b"M4V ", b"M4VH", b"M4VP", b"mmp4", b"MSNV", b"f4v ", b"F4V "],
        "mp4",
    ),
}
# Brands that are ISO media but not ours, named so the refusal says what the file is.
_OTHER_BRANDS = ((b"3g", "3GPP video"), (b"hei", "HEIF image"), (b"mif1", "HEIF image"),
                 (b"avi", "AVIF image"), (b"crx", "Canon raw photo"), (b"jp", "JPEG 2000"))
_MAX_FTYP_SIZE = 4096  # real ftyp boxes list a handful of brands


def check_iso_bmff(head: Head) -> str:
    """`ftyp` first, a sane size, text brands, a plausible next box; the major brand decides."""
    data = head.data
    head.need(16, "the ftyp box")
    size, header = struct.unpack_from(">I", data)[0], 8
    if size == 1:  # 64-bit size follows the type
        size, header = struct.unpack_from(">Q", data, 8)[0], 16
    if not header + 8 <= size <= _MAX_FTYP_SIZE or (size - header) % 4:
        raise NotMedia(f"its ftyp box has an impossible size ({size} bytes)")
    head.need(size + 8, "the box after the ftyp box")
    major = data[header:header + 4]
    compatible = [data[at:at + 4] for at in range(header + 8, size, 4)]
    if not all(_printable(brand) or brand == bytes(4) for brand in [major, *compatible]):
        raise NotMedia("its ftyp box lists brands that are not four-letter codes")
    next_size, next_type = struct.unpack_from(">I4s", data, size)
    # Box types are text (Apple's metadata boxes start with the byte 0xA9, "©").
    plausible_size = next_size in (0, 1) or next_size >= 8  # 0: to the end, 1: 64-bit
    if not (_printable(next_type.replace(b"\xa9", b"c")) and plausible_size):
        raise NotMedia("no valid box follows its ftyp box")
    if major in _BRANDS:
        return _BRANDS[major]
    shown = major.decode("ascii").strip() or "(blank)"
    kind = next((label for prefix, label in _OTHER_BRANDS if major.startswith(prefix)), "")
    what = f"{kind} (brand '{shown}')" if kind else f"ISO media with brand '{shown}'"
    raise NotMedia(f"{what} is not an accepted type; ISO media is accepted as mp4, m4a or mov")


# --- EBML (webm, mkv) ----------------------------------------------------------------

_EBML_ID = 0x1A45DFA3
_SEGMENT_ID = b"\x18\x53\x80\x67"
_DOC_TYPE_ID = 0x4282
_EBML_READ_VERSION_ID = 0x42F7
# Version, read version, max ID and size length, DocType and its versions and
# extension, Void, CRC-32: all the EBML header may hold.
_EBML_HEADER_CHILDREN = frozenset({0x4286, 0x42F7, 0x42F2, 0x42F3, 0x4282, 0x4287, 0x4285,
                                   0x4281, 0xEC, 0xBF})
_DOC_TYPES = {b"webm": "webm", b"matroska": "mkv"}
_MAX_EBML_HEADER = 1024


def _vint(head: Head, at: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `at`: (value, length); IDs keep their marker."""
    head.need(at + 1, "the EBML header")
    first = head.data[at]
    if first == 0:
        raise NotMedia("its EBML header holds an invalid variable-length number")
    length = 9 - first.bit_length()
    head.need(at + length, "the EBML header")
    value = int.from_bytes(head.data[at:at + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:  # all ones: "unknown size"
            raise NotMedia("its EBML header has an unknown size")
    return value, length


def check_ebml(head: Head) -> str:
    """An EBML header made only of header elements, then a Segment; DocType decides."""
    _, id_length = _vint(head, 0, keep_marker=True)
    size, size_length = _vint(head, id_length, keep_marker=False)
    start = id_length + size_length
    end = start + size
    if size > _MAX_EBML_HEADER:
        raise NotMedia(f"its EBML header claims an impossible size ({size} bytes)")
    head.need(end + len(_SEGMENT_ID), "the EBML header and the Segment after it")
    doc_type, read_version, at = None, 1, start
    while at < end:
        element, length = _vint(head, at, keep_marker=True)
        if length > 4 or element not in _EBML_HEADER_CHILDREN:
            raise NotMedia("its EBML header holds elements an EBML header cannot hold")
        child_size, child_size_length = _vint(head, at + length, keep_marker=False)
        value_at = at + length + child_size_length
        at = value_at + child_size
        if at > end:
            raise NotMedia("an element runs past the end of its EBML header")
        value = head.data[value_at:at]
        if element == _DOC_TYPE_ID:
            doc_type = value.rstrip(b"\0")
        elif element == _EBML_READ_VERSION_ID:
            read_version = int.from_bytes(value, "big")
    if read_version != 1:
        raise NotMedia(f"it needs EBML reader version {read_version}; only version 1 exists")
    if head.data[end:end + 4] != _SEGMENT_ID:
        raise NotMedia("its EBML header is not followed by a Segment")
    if doc_type is None:
        raise NotMedia("its EBML header names no DocType")
    if doc_type not in _DOC_TYPES:
        shown = doc_type.decode("ascii", "replace")
        raise NotMedia(f"EBML document type '{shown}' is not an accepted type (webm, matroska)")
    return _DOC_TYPES[doc_type]


# --- Ogg -----------------------------------------------------------------------------

# The first packet's codec id and the least a genuine identification header takes.
_OGG_CODECS = ((b"\x01vorbis", 30), (b"OpusHead", 19), (b"\x7fFLAC", 51),
               (b"Speex   ", 80), (b"\x80theora", 42))
_OGG_BEGIN_OF_STREAM, _OGG_END_OF_STREAM = 0x02, 0x04


def _ogg_crc_table() -> tuple[int, ...]:
    # Ogg's CRC-32 is MSB-first (poly 0x04C11DB7), so zlib.crc32 (reflected) won't do.
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_OGG_CRC_TABLE = _ogg_crc_table()


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def check_ogg(head: Head) -> str:
    """A first page that begins a stream and passes its CRC, opening a known codec."""
    data = head.data
    head.need(27, "the first Ogg page header")
    version, header_type, segments = data[4], data[5], data[26]
    if version != 0 or header_type & ~_OGG_END_OF_STREAM != _OGG_BEGIN_OF_STREAM:
        raise NotMedia("its first Ogg page header is not a valid start of stream")
    head.need(27 + segments, "the first Ogg page's segment table")
    lacing = data[27:27 + segments]
    body = 27 + segments
    page_end = body + sum(lacing)
    head.need(page_end, "the first Ogg page")
    page = data[:22] + bytes(4) + data[26:page_end]  # the CRC covers the page with CRC zeroed
    if _ogg_crc(page) != struct.unpack_from("<I", data, 22)[0]:
        raise NotMedia("its first Ogg page fails its checksum")
    # A packet ends at the first lacing value below 255; the id header must end here.
    ends = [index for index, value in enumerate(lacing) if value < 255]
    if not ends:
        raise NotMedia("the first Ogg packet does not end on the first page")
    packet = data[body:body + sum(lacing[:ends[0] + 1])]
    for codec_id, least in _OGG_CODECS:
        if packet.startswith(codec_id) and len(packet) >= least:
            return "ogg"
    raise NotMedia("its first Ogg packet is not a Vorbis, Opus, FLAC, Speex or Theora header")


# --- RIFF/WAVE -----------------------------------------------------------------------

_WAVE_FORMATS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "mu-law"}
_WAVE_EXTENSIBLE = 0xFFFE
_WAVE_SUBFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def check_wave(head: Head) -> str:
    """RIFF (or RF64) of form WAVE whose `fmt ` chunk describes uncompressed audio."""
    data = head.data
    head.need(12, "the RIFF header")
    if data[8:12] != b"WAVE":
        form = data[8:12].decode("latin-1")
        raise NotMedia(f"a RIFF file of form '{form}' (e.g. AVI), not WAVE audio")
    at = 12
    while True:  # chunks before `fmt ` (JUNK, bext, ds64, LIST...) are skipped whole
        head.need(at + 8, "the WAV fmt chunk")
        chunk, size = data[at:at + 4], struct.unpack_from("<I", data, at + 4)[0]
        if not _printable(chunk):
            raise NotMedia("its RIFF chunk list is malformed")
        if chunk == b"fmt ":
            break
        if chunk == b"data":
            raise NotMedia("its WAV data chunk comes before the fmt chunk")
        at += 8 + size + size % 2
    if not 16 <= size <= 256:
        raise NotMedia(f"its WAV fmt chunk has an impossible size ({size} bytes)")
    head.need(at + 8 + size, "the WAV fmt chunk")
    fields = struct.unpack_from("<HHIIHH", data, at + 8)
    tag, channels, rate, byte_rate, block_align, bits = fields
    code = tag
    if tag == _WAVE_EXTENSIBLE:
        subformat = data[at + 32:at + 48]
        if size < 40 or subformat[2:] != _WAVE_SUBFORMAT_TAIL:
            raise NotMedia("its WAV extensible format block is malformed")
        code = struct.unpack_from("<H", subformat)[0]
    if code not in _WAVE_FORMATS:
        raise NotMedia(f"WAV audio format 0x{code:04x} is compressed; only PCM WAV is accepted")
    if not (1 <= channels <= 64 and 1000 <= rate <= 768_000 and bits in (8, 16, 24, 32, 64)
            and block_align == channels * bits // 8 and byte_rate == rate * block_align):
        raise NotMedia("its WAV fmt chunk has inconsistent channel, rate or sample-size fields")
    return "wav"


# --- FLAC ----------------------------------------------------------------------------

def check_flac(head: Head, start: int = 0) -> str:
    """`fLaC`, a sane STREAMINFO block, then another metadata block or a frame."""
    data = head.data
    head.need(start + 42 + 2, "the FLAC STREAMINFO block")
    block_type, length = data[start + 4], int.from_bytes(data[start + 5:start + 8], "big")
    if block_type & 0x7F != 0 or length != 34:
        raise NotMedia("'fLaC' is not followed by a STREAMINFO block")
    info = start + 8
    min_block, max_block = struct.unpack_from(">HH", data, info)
    min_frame, max_frame = (int.from_bytes(data[at:at + 3], "big") for at in (info + 4, info + 7))
    packed = int.from_bytes(data[info + 10:info + 13], "big")  # rate:20 channels:3 bits:5 (-1)
    rate, bits = packed >> 4, (data[info + 12] & 0x01) << 4 | data[info + 13] >> 4
    if not (16 <= min_block <= max_block and 1 <= rate <= 655_350 and bits + 1 >= 4
            and (0 in (min_frame, max_frame) or min_frame <= max_frame)):
        raise NotMedia("its FLAC STREAMINFO block has impossible values")
    _check_flac_blocks(head, start + 42, last=bool(block_type & 0x80))
    return "flac"


_FLAC_BLOCK_TYPES = range(1, 7)  # PADDING .. PICTURE; 7-126 are reserved, 127 invalid
_MAX_FLAC_BLOCKS = 64


def _check_flac_blocks(head: Head, at: int, last: bool) -> None:
    """The metadata blocks after STREAMINFO chain up to an audio frame's sync code.

    A chain that runs past what may be sniffed (a large cover picture) is accepted on
    the blocks seen so far."""
    for _ in range(_MAX_FLAC_BLOCKS):
        if at + 4 > head.limit:
            return
        head.need(at + 4, "a FLAC metadata block header")
        data = head.data
        if last:  # audio frames start with the sync code 0xFFF8 or 0xFFF9
            if data[at] != 0xFF or data[at + 1] & 0xFE != 0xF8:
                raise NotMedia("no FLAC frame follows its metadata")
            return
        block_type, length = data[at] & 0x7F, int.from_bytes(data[at + 1:at + 4], "big")
        if block_type not in _FLAC_BLOCK_TYPES or not _flac_block_body_ok(head, at + 4, block_type, length):
            raise NotMedia("an invalid FLAC metadata block follows STREAMINFO")
        last = bool(data[at] & 0x80)
        at += 4 + length
    raise NotMedia("its FLAC metadata blocks never end")


def _flac_block_body_ok(head: Head, body: int, block_type: int, length: int) -> bool:
    """The first bytes of a metadata block have the shape its type prescribes."""
    def peek(size: int) -> bytes:
        head.need(body + min(size, length), "a FLAC metadata block")
        return head.data[body:body + min(size, length)]

    if block_type == 1:  # PADDING: zeros
        return not any(peek(64))
    if block_type == 2:  # APPLICATION: a registered four-character id
        return length >= 4 and _printable(peek(4))
    if block_type == 3:  # SEEKTABLE: 18-byte seek points
        return length % 18 == 0
    if block_type == 4:  # VORBIS_COMMENT: vendor string length, then the comment count
        return length >= 8 and int.from_bytes(peek(4), "little") <= length - 8
    if block_type == 5:  # CUESHEET: a media catalog number of ASCII or NUL padding
        return length >= 396 and all(byte == 0 or 0x20 <= byte <= 0x7E for byte in peek(8))
    # PICTURE: picture type 0-20, then a short ASCII MIME type
    start = peek(8)
    mime_length = int.from_bytes(start[4:8], "big")
    return (length >= 32 and int.from_bytes(start[:4], "big") <= 20 and 0 < mime_length <= 64
            and _printable(peek(8 + mime_length)[8:]))
