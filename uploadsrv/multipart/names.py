"""A client's file name made fit to show: `display_name`.

Owns what of a sent file name survives for display (the last path segment, without
characters that hide or disguise text). Pure; it must never make a name into a path:
storage names files by id.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

MAX_NAME = 255
_FOLDERS = re.compile(r"[/\\]")
# Unicode categories that change how a name reads without being visible themselves:
# controls (C0, C1), format characters (bidi overrides such as U+202E turn
# "evil\u202e3pm.exe" into "evilexe.mp3"; zero-width joiners, soft hyphens, BOM),
# line and paragraph separators, and surrogates.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def display_name(raw: str | None) -> str:
    """The client's file name, for display only: no folders, no hidden characters.

    Browsers percent-encode `"`, CR and LF in names and some clients (aiohttp) encode
    every non-ASCII character, so escapes are decoded where they form valid UTF-8."""
    try:
        name = unquote(raw or "", errors="strict")
    except UnicodeDecodeError:
        name = raw or ""
    name = _FOLDERS.split(name)[-1]
    if not name.isascii() or not name.isprintable():
        name = "".join(char for char in name if unicodedata.category(char) not in _HIDDEN)
    return name[:MAX_NAME]
