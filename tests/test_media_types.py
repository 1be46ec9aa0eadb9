"""uploadsrv.media_types: what the first bytes of a file say it is."""

from __future__ import annotations

import inspect
import random
import shutil
import struct
from pathlib import Path

import puremagic
import pytest
from media_samples import EXPECTED

from uploadsrv.media_types import (
    KNOWN_TYPES,
    MAX_SNIFF_BYTES,
    Detected,
    Detection,
    NeedMore,
    Rejected,
    detect,
)

REAL = sorted(name for name, expected in EXPECTED.items() if expected is not None)
REFUSED = sorted(name for name, expected in EXPECTED.items() if expected is None)


def _sample_path(media_samples: dict[str, Path], name: str) -> Path:
    if name not in media_samples:
        pytest.skip(f"the bundled ffmpeg cannot make {name}")
    return media_samples[name]


def _sample(media_samples: dict[str, Path], name: str) -> bytes:
    return _sample_path(media_samples, name).read_bytes()


def _id3_tag_end(data: bytes) -> int:
    """Where the ID3v2 tag that opens `data` ends (its size is syncsafe: 7 bits a byte)."""
    size = 0
    for byte in data[6:10]:
        size = size << 7 | byte
    return 10 + size


def _checked(verdict: Detection, head_length: int) -> Detection:
    """The promises every NeedMore keeps."""
    if isinstance(verdict, NeedMore):
        assert head_length < verdict.total <= MAX_SNIFF_BYTES
    return verdict


def sniff_from_first_bytes(data: bytes, first: int = 8192) -> Detection:
    """Give detect the first bytes, then exactly what each NeedMore asks for."""
    head = data[:first]
    while isinstance(verdict := _checked(detect(head, at_end=False), len(head)), NeedMore):
        if len(head) == len(data):  # the file ended before the bytes asked for
            return detect(data, at_end=True)
        head = data[:verdict.total]
    return verdict


def sniff_in_steps(data: bytes, step: int) -> Detection:
    """Feed the file in pieces of `step` bytes the way the ingest pipeline does: call
    detect as soon as bytes arrive, then whenever the head reaches what was asked for."""
    wanted, have = 1, 0
    while have < len(data):
        have = min(len(data), have + step)
        if have >= wanted:
            verdict = _checked(detect(data[:have], at_end=False), have)
            if not isinstance(verdict, NeedMore):
                return verdict
            wanted = verdict.total
    verdict = detect(data, at_end=True)
    assert not isinstance(verdict, NeedMore)
    return verdict


def _type_name(verdict: Detection) -> str | None:
    return verdict.media.name if isinstance(verdict, Detected) else None


# --- real files -----------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_real_file_is_detected_from_its_first_8_kib(media_samples, name):
    verdict = sniff_from_first_bytes(_sample(media_samples, name))
    assert _type_name(verdict) == EXPECTED[name], verdict


@pytest.mark.parametrize("name", REAL)
def test_real_file_is_detected_when_given_whole(media_samples, name):
    verdict = detect(_sample(media_samples, name), at_end=True)
    assert _type_name(verdict) == EXPECTED[name], verdict


def test_detected_types_carry_their_mime_type(media_samples):
    assert detect(_sample(media_samples, "m4a"), at_end=True) == Detected(KNOWN_TYPES["m4a"])
    assert KNOWN_TYPES["m4a"].mime == "audio/mp4"
    assert {media.name for media in KNOWN_TYPES.values()} == set(KNOWN_TYPES) == {
        "mp3", "wav", "flac", "ogg", "mp4", "m4a", "mov", "webm", "mkv"}


def test_m4a_is_not_reported_as_mp4(media_samples):
    assert _type_name(sniff_from_first_bytes(_sample(media_samples, "m4a"))) == "m4a"


def test_mov_is_not_reported_as_mp4(media_samples):
    assert _type_name(sniff_from_first_bytes(_sample(media_samples, "mov"))) == "mov"


def test_mkv_is_not_reported_as_webm(media_samples):
    assert _type_name(sniff_from_first_bytes(_sample(media_samples, "mkv"))) == "mkv"
    assert _type_name(sniff_from_first_bytes(_sample(media_samples, "mka_audio_only"))) == "mkv"


def test_mpeg2_layer3_frames_are_mp3_though_puremagic_does_not_know_them(media_samples):
    data = _sample(media_samples, "mp3_mpeg2_22khz")
    assert data[:2] == b"\xff\xf3"
    with pytest.raises(puremagic.PureError):
        puremagic.magic_string(data[:8192])
    assert _type_name(detect(data, at_end=True)) == "mp3"


def test_mp3_with_big_id3_tag_asks_for_the_bytes_after_the_tag(media_samples):
    data = _sample(media_samples, "mp3_big_id3")
    assert _id3_tag_end(data) > 200 * 1024
    verdict = detect(data[:8192], at_end=False)
    assert isinstance(verdict, NeedMore) and verdict.total > 200 * 1024


def test_misnamed_mp4_is_still_mp4(media_samples, tmp_path):
    # detect() cannot be told a file name, so a client's name can never steer it.
    assert list(inspect.signature(detect).parameters) == ["head", "at_end"]
    misnamed = tmp_path / "song.mp3"
    shutil.copyfile(_sample_path(media_samples, "mp4"), misnamed)
    assert _type_name(detect(misnamed.read_bytes(), at_end=True)) == "mp4"


# --- refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("name", REFUSED)
def test_impostor_is_rejected_from_its_first_bytes(media_samples, name):
    verdict = sniff_from_first_bytes(_sample(media_samples, name))
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason


@pytest.mark.parametrize("name", REFUSED)
def test_impostor_is_rejected_when_given_whole(media_samples, name):
    assert isinstance(detect(_sample(media_samples, name), at_end=True), Rejected)


def test_3gp_is_rejected_naming_its_brand(media_samples):
    verdict = detect(_sample(media_samples, "3gp"), at_end=True)
    assert isinstance(verdict, Rejected) and "3gp" in verdict.reason


def test_raw_adts_aac_is_not_mp3(media_samples):
    verdict = detect(_sample(media_samples, "aac_adts"), at_end=True)
    assert isinstance(verdict, Rejected) and "ADTS" in verdict.reason


def test_id3_tag_followed_by_noise_is_rejected(media_samples):
    tagged = _sample(media_samples, "mp3_id3")
    noise = random.Random(1).randbytes(8192)
    verdict = detect(tagged[:_id3_tag_end(tagged)] + noise, at_end=False)
    assert verdict == Rejected("it starts with an ID3 tag but no MPEG audio frames follow it")


def test_flac_streaminfo_followed_by_noise_is_rejected(media_samples):
    """A real fLaC + STREAMINFO opening, then noise: the metadata blocks must chain."""
    opening = _sample(media_samples, "flac")[:42]
    accepted = [seed for seed in range(300)
                if _type_name(sniff_from_first_bytes(opening + random.Random(seed).randbytes(MAX_SNIFF_BYTES + 4096))) is not None]
    assert accepted == []


def test_empty_file_is_rejected():
    assert detect(b"", at_end=True) == Rejected("the file is empty")


def test_file_that_ends_inside_its_header_is_rejected(media_samples):
    verdict = detect(_sample(media_samples, "mp4")[:20], at_end=True)
    assert isinstance(verdict, Rejected) and "ends inside" in verdict.reason


def _with_major_brand(mp4: bytes, brand: bytes) -> bytes:
    assert mp4[4:8] == b"ftyp"
    return mp4[:8] + brand + mp4[12:]


@pytest.mark.parametrize(("brand", "expected"), [
    (b"mp42", "mp4"), (b"iso6", "mp4"), (b"avc1", "mp4"), (b"dash", "mp4"), (b"M4V ", "mp4"),
    (b"MSNV", "mp4"), (b"M4B ", "m4a"), (b"M4P ", "m4a"), (b"qt  ", "mov"),
])
def test_ftyp_major_brand_decides_the_iso_media_type(media_samples, brand, expected):
    patched = _with_major_brand(_sample(media_samples, "mp4"), brand)
    assert _type_name(detect(patched, at_end=True)) == expected


@pytest.mark.parametrize("brand", [b"heic", b"avif", b"3gp4", b"crx ", b"XAVC"])
def test_other_iso_media_brands_are_rejected_by_name(media_samples, brand):
    verdict = detect(_with_major_brand(_sample(media_samples, "mp4"), brand), at_end=True)
    assert isinstance(verdict, Rejected) and brand.decode().strip() in verdict.reason


def test_ebml_document_type_other_than_webm_or_matroska_is_rejected(media_samples):
    webm = _sample(media_samples, "webm")
    assert webm.count(b"\x42\x82\x84webm") == 1
    verdict = detect(webm.replace(b"\x42\x82\x84webm", b"\x42\x82\x84wxbm"), at_end=True)
    assert isinstance(verdict, Rejected) and "wxbm" in verdict.reason


def test_ogg_page_with_a_bad_checksum_is_rejected(media_samples):
    ogg = bytearray(_sample(media_samples, "ogg_vorbis"))
    ogg[40] ^= 0x01  # inside the Vorbis identification header
    verdict = detect(bytes(ogg), at_end=True)
    assert isinstance(verdict, Rejected) and "checksum" in verdict.reason


def test_compressed_wav_is_rejected_naming_its_format(media_samples):
    wav = _sample(media_samples, "wav")
    assert wav[12:16] == b"fmt "
    verdict = detect(wav[:20] + struct.pack("<H", 0x0055) + wav[22:], at_end=True)
    assert isinstance(verdict, Rejected) and "0x0055" in verdict.reason


# --- ID3 tags longer than MAX_SNIFF_BYTES ---------------------------------------------

def _id3v23(*frames: bytes, padding: int = 1024) -> bytes:
    body = b"".join(frames) + bytes(padding)
    size = len(body)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + body


def _id3v23_frame(frame_id: bytes, payload: bytes, declared: int | None = None) -> bytes:
    size = len(payload) if declared is None else declared
    return frame_id + struct.pack(">I", size) + b"\x00\x00" + payload


def _cover(size: int) -> bytes:
    return b"\x00image/png\x00\x03\x00" + random.Random(7).randbytes(size)


@pytest.mark.parametrize("step", [1, 4096])
def test_id3_tag_longer_than_max_sniff_bytes_is_accepted_on_its_frames(media_samples, step):
    audio = _sample(media_samples, "mp3_no_id3")
    tag = _id3v23(_id3v23_frame(b"TIT2", b"\x00Big cover art"),
                  _id3v23_frame(b"APIC", _cover(MAX_SNIFF_BYTES + 300_000)))
    verdict = sniff_in_steps(tag + audio, step)
    assert _type_name(verdict) == "mp3", verdict


def test_id3_tag_longer_than_max_sniff_bytes_with_broken_frames_is_rejected(media_samples):
    audio = _sample(media_samples, "mp3_no_id3")
    # TIT2 claims 5 bytes, so the next frame header would start inside its text.
    tag = _id3v23(_id3v23_frame(b"TIT2", b"\x00big cover art", declared=5),
                  _id3v23_frame(b"APIC", _cover(MAX_SNIFF_BYTES + 300_000)))
    verdict = sniff_in_steps(tag + audio, 4096)
    assert isinstance(verdict, Rejected), verdict


# --- how detect() is called -----------------------------------------------------------

@pytest.mark.parametrize("step", [1, 7, 512, 4096])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detection_is_the_same_however_the_head_grows(media_samples, name, step):
    data = _sample(media_samples, name)
    assert sniff_in_steps(data, step) == detect(data, at_end=True)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_at_end_never_answers_need_more(media_samples, name):
    data = _sample(media_samples, name)
    for length in sorted({*range(0, 48), 64, 100, 1000, 4096, 8192, len(data) // 2, len(data)}):
        assert not isinstance(detect(data[:length], at_end=True), NeedMore), length


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_need_more_always_asks_beyond_the_head_and_within_the_limit(media_samples, name):
    data = _sample(media_samples, name)
    for length in sorted({*range(0, 48), 64, 100, 1000, 4096, 8192, len(data)}):
        head = data[:length]
        _checked(detect(head, at_end=False), len(head))


def test_a_head_of_max_sniff_bytes_or_more_is_always_decided():
    endless_tag = _id3v23(_id3v23_frame(b"TIT2", b"\x00x"), padding=4 * MAX_SNIFF_BYTES)
    for head in (endless_tag[:MAX_SNIFF_BYTES], endless_tag, bytes(2 * MAX_SNIFF_BYTES)):
        assert not isinstance(detect(head, at_end=False), NeedMore)
