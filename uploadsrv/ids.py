"""Upload and file ids: made by the server, checked wherever one comes from a URL."""

from __future__ import annotations

import re
import secrets

from .errors import NotFound

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_upload_id() -> str:
    """22 random URL-safe characters."""
    return secrets.token_urlsafe(16)


def check_id(upload_id: str) -> str:
    """The id itself, or NotFound: ids come from URLs, and anything else must never reach a path."""
    if not _ID.match(upload_id):
        raise NotFound(f"no file or upload with id {upload_id!r}")
    return upload_id
