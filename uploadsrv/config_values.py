"""The parsers of config values: sizes ("512KiB"), durations ("90s"), ports, worker
counts, URLs, CORS origins, media type names, Redis URLs and the like.

Each takes what TOML gave and returns the value or raises ValueError with a message
that names what is accepted; `config` adds the section and key. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .media_types import KNOWN_TYPES

MAX_WORKERS = 64


_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "512KiB", "5GiB", "10MB"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("expected an integer of bytes or a string such as \"512KiB\"")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _QUANTITY.match(value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size (use e.g. 1048576, \"512KiB\", \"5GiB\", \"10MB\")")
        number, unit = float(match.group(1)), match.group(2).lower()
    if number < 0:
        raise ValueError("must not be negative")
    return int(number * _SIZE_UNITS[unit])


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90s", "10m", "1h"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected seconds or a string such as \"90s\"")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _QUANTITY.match(value)
        if not match or match.group(2).lower() not in _DURATION_UNITS:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30, \"90s\", \"10m\", \"1h\")")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def positive(parse: Callable[[object], float]) -> Callable[[object], Any]:
    def parse_positive(value: object) -> Any:
        result = parse(value)
        if result <= 0:
            raise ValueError("must be greater than zero")
        return result
    return parse_positive


def integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def port(value: object) -> int:
    port = integer(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a TCP port (0-65535)")
    return port


def workers(value: object) -> int:
    count = integer(value)
    if not 0 <= count <= MAX_WORKERS:
        raise ValueError(f"{count} is not a worker count (1-{MAX_WORKERS}, or 0 for one per core)")
    return count


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def base_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string such as \"https://uploads.example.com\"")
    if value and not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL such as \"https://uploads.example.com\"")
    return value.rstrip("/")


def origins(value: object) -> tuple[str, ...]:
    origins = texts(value)
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/?#\s]+$", origin):
            raise ValueError(f"{origin!r} is not an origin such as \"https://app.example.com\" (or \"*\")")
    return tuple(origin.rstrip("/") for origin in origins)


def optional_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def one_of(*choices: str) -> Callable[[object], str]:
    def parse_choice(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(repr(choice) for choice in choices)}, got {value!r}")
        return str(value)
    return parse_choice


def count(value: object) -> int:
    number = integer(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError("expected a list of non-empty strings")
    return tuple(value)


def media_types(value: object) -> tuple[str, ...]:
    names = texts(value)
    unknown = [name for name in names if name not in KNOWN_TYPES]
    if unknown:
        raise ValueError(f"unknown type {unknown[0]!r}; known types: {', '.join(KNOWN_TYPES)}")
    return names


def redis_url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^(rediss?://[^\s]+|unix://[^\s]+)$", value):
        raise ValueError("expected a Redis URL such as \"redis://127.0.0.1:6379/0\" (rediss:// for TLS, unix:///path)")
    return value
