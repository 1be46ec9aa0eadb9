"""Parameterised header values: `type; name=token; name="quoted"; name*=UTF-8''%C3%A9`.

Owns the syntax of RFC 9110 parameters and their RFC 2231 / RFC 5987 extensions (charset
and percent-encoding, continuations `name*0`, `name*1*`), for the request's Content-Type
and each part's Content-Disposition. Pure: no I/O, no aiohttp, no codec lookup by a name
the client chose (a charset is one of three we map ourselves), so every malformation is
a `MalformedMultipart` and nothing else.

Ambiguity is refused rather than resolved: a parameter given twice, an extended value
next to a continued one, a continuation with a gap. Two parsers that resolve such input
differently (a filter in front of us, and us) would see different forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from ..errors import MalformedMultipart

_TCHARS = "!#$%&'*+.^_`|~0-9A-Za-z-"
_TOKEN = re.compile(f"[{_TCHARS}]+")
_TYPE = re.compile(f"[{_TCHARS}]+(?:/[{_TCHARS}]+)?")
# RFC 5987 ext-value: charset ' [language] ' value-chars (attr-char or %XX).
_EXT_VALUE = re.compile(r"([A-Za-z0-9!#$%&+^_`{}~-]*)'([A-Za-z0-9-]*)'((?:%[0-9A-Fa-f]{2}|[A-Za-z0-9!#$&+.^_`|~-])*)")
_EXT_MORE = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9!#$&+.^_`|~-])*")
_SECTION = re.compile(r"([^*]+)\*(0|[1-9][0-9]{0,2})(\*?)")
# The charsets RFC 5987 requires, mapped to codecs here: a client-chosen name never
# reaches codecs.lookup (`undefined`, `unicode-escape`, `idna` raise or decode oddly).
_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1", "us-ascii": "ascii", "": "ascii"}
MAX_SECTIONS = 64
# Characters a quoted string may not hold even escaped: framing (CR, LF) and NUL, which
# C parsers take as the end of the string.
_FORBIDDEN = re.compile(r"[\x00\r\n]")


@dataclass(frozen=True)
class Parameters:
    """A header value's type (lower case) and its parameters, by lower-case name."""

    type: str
    values: dict[str, str]
    # Names given in RFC 2231 form (name*=..., name*0=...), not as a plain value.
    encoded: frozenset[str]


def parse_parameters(text: str, what: str) -> Parameters:
    """Split `type; a=b; c="d"` into its parts; `what` names the header in messages."""
    match = _TYPE.match(text, _skip_space(text, 0))
    if match is None:
        raise MalformedMultipart(f"{what} has no type: {text[:80]!r}")
    raw: dict[str, tuple[str, bool]] = {}  # name -> (value as written, was quoted)
    position = match.end()
    while True:
        position = _skip_space(text, position)
        if position == len(text):
            break
        if text[position] != ";":
            raise MalformedMultipart(f"{what} is not 'type; name=value; ...' near {text[position:position + 40]!r}")
        position = _skip_space(text, position + 1)
        if position == len(text):
            break  # a trailing ';' is harmless
        name_match = _TOKEN.match(text, position)
        if name_match is None or not text.startswith("=", name_match.end()):
            raise MalformedMultipart(f"{what} has a parameter without a value near {text[position:position + 40]!r}")
        name = name_match.group().lower()
        if name in raw:
            raise MalformedMultipart(f"{what} has the parameter {name!r} twice")
        value, position, quoted = _value(text, name_match.end() + 1, what)
        raw[name] = (value, quoted)
    return _combine(match.group().lower(), raw, what)


def _skip_space(text: str, position: int) -> int:
    """The position after optional whitespace (spaces and tabs) at `position`."""
    while position < len(text) and text[position] in " \t":
        position += 1
    return position


def _value(text: str, position: int, what: str) -> tuple[str, int, bool]:
    """A token or a quoted string at `position`: (value, position after it, was quoted)."""
    if text.startswith('"', position):
        return _quoted(text, position + 1, what)
    token = _TOKEN.match(text, position)
    if token is None:
        raise MalformedMultipart(f"{what} has a parameter value that is neither a token nor quoted "
                                 f"near {text[position:position + 40]!r}")
    return token.group(), token.end(), False


def _quoted(text: str, position: int, what: str) -> tuple[str, int, bool]:
    # A backslash escapes only '"' and '\': browsers send Windows paths (C:\x\y.mp3)
    # unescaped, and a backslash before any other character stays (as Go's mime does).
    out: list[str] = []
    end = len(text)
    while position < end:
        char = text[position]
        if char == '"':
            value = "".join(out)
            if _FORBIDDEN.search(value):
                raise MalformedMultipart(f"{what} has a control character in a quoted value")
            return value, position + 1, True
        if char == "\\" and position + 1 < end and text[position + 1] in '"\\':
            out.append(text[position + 1])
            position += 2
            continue
        out.append(char)
        position += 1
    raise MalformedMultipart(f"{what} has a quoted value without its closing quote")


def _combine(kind: str, raw: dict[str, tuple[str, bool]], what: str) -> Parameters:
    values: dict[str, str] = {}
    encoded: set[str] = set()
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    extended: dict[str, str] = {}
    for name, (value, quoted) in raw.items():
        section = _SECTION.fullmatch(name)
        if section is not None:
            base, index, star = section.group(1), int(section.group(2)), bool(section.group(3))
            sections.setdefault(base, {})[index] = (value, star and not quoted)
            if star and quoted:
                raise MalformedMultipart(f"{what}: the RFC 2231 value of {name!r} must not be quoted")
        elif name.endswith("*") and "*" not in name[:-1] and len(name) > 1:
            if quoted:
                raise MalformedMultipart(f"{what}: the RFC 2231 value of {name!r} must not be quoted")
            extended[name[:-1]] = value
        elif "*" in name:
            # name*01, name**: not RFC 2231, but another parser may take it as a section.
            raise MalformedMultipart(f"{what} has the parameter {name!r}, which is not name*, name*N or name*N*")
        else:
            values[name] = value
    for base, value in extended.items():
        if base in sections:
            raise MalformedMultipart(f"{what} gives {base!r} both as {base}* and as {base}*0")
        values[base] = decode_extended(value, what)
        encoded.add(base)
    for base, parts in sections.items():
        if base in values and base not in encoded:
            raise MalformedMultipart(f"{what} gives {base!r} both plainly and in RFC 2231 sections")
        values[base] = _join_sections(base, parts, what)
        encoded.add(base)
    return Parameters(kind, values, frozenset(encoded))


def decode_extended(value: str, what: str) -> str:
    """RFC 5987 `charset'language'%XX...` to text; the charset must be one we know."""
    match = _EXT_VALUE.fullmatch(value)
    if match is None:
        raise MalformedMultipart(f"{what} has an RFC 5987 value that is not charset'language'%XX...: {value[:60]!r}")
    codec = _codec(match.group(1), what)
    return _decode(unquote_to_bytes(match.group(3)), codec, what)


def _codec(charset: str, what: str) -> str:
    codec = _CHARSETS.get(charset.lower())
    if codec is None:
        raise MalformedMultipart(f"{what} names the charset {charset[:30]!r}; use UTF-8")
    return codec


def _decode(data: bytes, codec: str, what: str) -> str:
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        raise MalformedMultipart(f"{what} has an encoded value that is not valid {codec}") from None
    if _FORBIDDEN.search(text):
        raise MalformedMultipart(f"{what} has a control character in an encoded value")
    return text


def _join_sections(base: str, parts: dict[int, tuple[str, bool]], what: str) -> str:
    """RFC 2231 continuations: sections 0..n-1 without gaps, the first one's charset for all."""
    if len(parts) > MAX_SECTIONS or sorted(parts) != list(range(len(parts))):
        raise MalformedMultipart(f"{what}: the sections of {base!r} are not numbered 0, 1, 2, ...")
    first, first_extended = parts[0]
    codec = "utf-8"
    data = bytearray()
    if first_extended:
        match = _EXT_VALUE.fullmatch(first)
        if match is None:
            raise MalformedMultipart(f"{what}: {base}*0* is not charset'language'%XX...")
        codec = _codec(match.group(1), what)
        data += unquote_to_bytes(match.group(3))
    else:
        data += _encode(first, codec, what)
    for index in range(1, len(parts)):
        value, is_extended = parts[index]
        if is_extended:
            if not first_extended or not _EXT_MORE.fullmatch(value):
                raise MalformedMultipart(f"{what}: {base}*{index}* is not percent-encoded in the charset of {base}*0*")
            data += unquote_to_bytes(value)
        else:
            data += _encode(value, codec, what)
    return _decode(bytes(data), codec, what)


def _encode(value: str, codec: str, what: str) -> bytes:
    try:
        return value.encode(codec)
    except UnicodeEncodeError:
        raise MalformedMultipart(f"{what} has a section that is not {codec}") from None
