"""The request's multipart boundary, read by RFC 9110/2231 rules (`params.py`) and checked
against RFC 2046, before streaming-form-data sees the Content-Type: the library hands an
RFC 2231 charset to Python as a codec name (a 500 for `boundary*=undefined''B`).
"""

from __future__ import annotations

import re

from ..errors import MalformedMultipart
from .params import parse_parameters

MAX_BOUNDARY = 70  # RFC 2046
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]")


def parse_boundary(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type, checked against RFC 2046."""
    params = parse_parameters(content_type, "the request's Content-Type")
    if params.type != "multipart/form-data":
        raise MalformedMultipart(f"the Content-Type is {params.type!r}, not multipart/form-data")
    boundary = params.values.get("boundary")
    if boundary is None:
        raise MalformedMultipart("the Content-Type has no multipart boundary; send multipart/form-data with a boundary")
    if "boundary" in params.encoded:
        raise MalformedMultipart("the multipart boundary must be a plain parameter (boundary=...), not RFC 2231 encoded")
    if len(boundary) > MAX_BOUNDARY:
        raise MalformedMultipart(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
    if not _BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart(f"the multipart boundary {boundary[:80]!r} has characters RFC 2046 does not allow")
    return boundary.encode("ascii")
