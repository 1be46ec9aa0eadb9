"""The rules of tus 1.0.0 headers, as pure functions: no I/O, no aiohttp.

Each function takes header values (a mapping, or one value) and returns what they mean,
or raises the `UploadError` the protocol asks for: 412 for a missing or other
`Tus-Resumable`, 400 for a header that breaks its rule, 413 for a length over the limit.
Everything the server echoes back (`Upload-Metadata`) is rebuilt from validated parts,
so nothing a client sent can inject a header.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from .errors import FileTooLarge, InvalidHeader, UnsupportedChecksum, UnsupportedVersion, format_size

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "termination",
              "expiration", "checksum", "concatenation")
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
OFFSET_STREAM = "application/offset+octet-stream"
# A non-negative decimal integer without sign or spaces, short enough to be sane.
_NUMBER = re.compile(r"^[0-9]{1,19}$")
_METADATA_KEY = re.compile(r"^[!#-+\--~]+$")  # printable ASCII, no space, no comma
_DIGEST_BYTES = {"sha1": 20, "sha256": 32, "md5": 16}
MAX_METADATA_KEYS = 64
_ID_PATH = re.compile(r"^/files/([A-Za-z0-9_-]{1,64})/?$")


def check_version(headers: Mapping[str, str]) -> None:
    """412 unless the request speaks tus 1.0.0."""
    value = headers.get("Tus-Resumable")
    if value != TUS_VERSION:
        said = "no Tus-Resumable header" if value is None else f"Tus-Resumable: {value!r}"
        raise UnsupportedVersion(f"this server speaks tus {TUS_VERSION}; the request had {said}",
                                 headers={"Tus-Version": TUS_VERSION})


def parse_number(value: str | None, name: str) -> int | None:
    """A header that must be a non-negative integer; None when absent."""
    if value is None:
        return None
    # HTTP's optional whitespace only: str.strip() would also take \x1c-\x1f, which int() refuses.
    text = value.strip(" \t")
    if not _NUMBER.fullmatch(text):
        raise InvalidHeader(f"{name} must be a non-negative whole number, not {value[:40]!r}")
    return int(text)


@dataclass(frozen=True)
class Creation:
    """What a creation request asks for."""

    length: int | None  # None: deferred, or a final upload (the sum of its partials)
    metadata: dict[str, str]  # key -> decoded text
    metadata_header: str  # canonical form, echoed on HEAD
    concat: str  # "", "partial" or "final"
    partials: tuple[str, ...]
    concat_header: str


def parse_creation(headers: Mapping[str, str], max_size: int) -> Creation:
    """The rules of POST (creation, defer-length, concatenation, metadata)."""
    length = parse_number(headers.get("Upload-Length"), "Upload-Length")
    defer = headers.get("Upload-Defer-Length")
    concat, partials, concat_header = parse_concat(headers.get("Upload-Concat"))
    if concat == "final":
        if length is not None or defer is not None:
            raise InvalidHeader("a final upload (Upload-Concat: final) takes no Upload-Length: "
                                "its length is the sum of its partial uploads")
    elif defer is not None:
        if defer.strip() != "1":
            raise InvalidHeader(f"Upload-Defer-Length must be 1, not {defer[:20]!r}")
        if length is not None:
            raise InvalidHeader("send either Upload-Length or Upload-Defer-Length: 1, not both")
    elif length is None:
        raise InvalidHeader("a new upload needs Upload-Length (or Upload-Defer-Length: 1)")
    if length is not None:
        check_length(length, max_size)
    metadata, canonical = parse_metadata(headers.get("Upload-Metadata"))
    return Creation(length, metadata, canonical, concat, partials, concat_header)


def check_length(length: int, max_size: int) -> None:
    if length > max_size:
        raise FileTooLarge(f"the upload ({format_size(length)}) is larger than the limit of "
                           f"{format_size(max_size)}", headers={"Tus-Max-Size": str(max_size)})


def parse_metadata(value: str | None) -> tuple[dict[str, str], str]:
    """`key base64,key2 base64` -> ({key: text}, canonical header); 400 when malformed."""
    if value is None or not value.strip():
        return {}, ""
    decoded: dict[str, str] = {}
    canonical: list[str] = []
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if len(parts) > 2 or not _METADATA_KEY.match(key):
            raise InvalidHeader(f"Upload-Metadata: {pair.strip()[:60]!r} is not 'key base64value' "
                                "(keys are ASCII without spaces or commas)")
        if key in decoded:
            raise InvalidHeader(f"Upload-Metadata: the key {key!r} appears twice")
        encoded = parts[1] if len(parts) == 2 else ""
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidHeader(f"Upload-Metadata: the value of {key!r} is not base64") from None
        decoded[key] = raw.decode("utf-8", errors="replace")
        canonical.append(f"{key} {encoded}" if encoded else key)
        if len(decoded) > MAX_METADATA_KEYS:
            raise InvalidHeader(f"Upload-Metadata: more than {MAX_METADATA_KEYS} keys")
    return decoded, ",".join(canonical)


def format_metadata(fields: Mapping[str, str]) -> str:
    """{key: text} -> the canonical `Upload-Metadata` (a key with an empty value alone)."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
                    for key, value in fields.items() if _METADATA_KEY.match(key))


def parse_concat(value: str | None) -> tuple[str, tuple[str, ...], str]:
    """`partial` or `final;<url> <url>` -> (kind, partial upload ids, canonical header)."""
    if value is None:
        return "", (), ""
    text = value.strip()
    if text == "partial":
        return "partial", (), "partial"
    kind, _, urls = text.partition(";")
    if kind.strip() != "final" or not urls.strip():
        raise InvalidHeader("Upload-Concat must be 'partial' or 'final;<upload URL> <upload URL> ...'")
    ids = tuple(upload_id_of(url) for url in urls.split())
    return "final", ids, "final;" + " ".join(f"/files/{upload_id}" for upload_id in ids)


def upload_id_of(url: str) -> str:
    """The upload id in an upload URL, absolute (`https://host/files/<id>`) or relative."""
    try:
        path = urlsplit(url).path
    except ValueError:  # urlsplit refuses some netlocs, e.g. "http://h[x" (an unclosed IPv6 literal)
        path = ""
    match = _ID_PATH.match(path)
    if not match:
        raise InvalidHeader(f"{url[:100]!r} is not an upload URL of this server (/files/<id>)")
    return match.group(1)


def parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    """`Upload-Checksum: <algorithm> <base64 digest>` -> (algorithm, digest); None when absent."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise UnsupportedChecksum(f"checksum algorithm {algorithm[:20]!r} is not supported; "
                                  f"use one of {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidHeader("Upload-Checksum: the digest is not base64") from None
    if len(digest) != _DIGEST_BYTES[algorithm]:
        raise InvalidHeader(f"Upload-Checksum: a {algorithm} digest has {_DIGEST_BYTES[algorithm]} bytes")
    return algorithm, digest


def http_date(timestamp: float) -> str:
    """RFC 9110 date, as `Upload-Expires` takes it."""
    return formatdate(timestamp, usegmt=True)
