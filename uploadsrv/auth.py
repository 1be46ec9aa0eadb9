"""Bearer-token check for `/upload*`, `/files*` and `/metrics`, shared by the middleware,
the `Expect: 100-continue` handlers (which run before middlewares) and the metrics page
(which also takes `metrics.token`)."""

from __future__ import annotations

import hmac
from collections.abc import Collection

from aiohttp import web

from .errors import Unauthorized

PROTECTED_PREFIXES = ("/upload", "/files")


def needs_token(path: str, tokens: Collection[str]) -> bool:
    return bool(tokens) and path.startswith(PROTECTED_PREFIXES)


def bearer_token(request: web.BaseRequest) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() or None if scheme.lower() == "bearer" else None


def check_token(request: web.BaseRequest, tokens: Collection[str]) -> None:
    """For the protected paths: raise 401 unless the request carries one of `tokens`."""
    if needs_token(request.path, tokens):
        require_token(request, tokens)


def require_token(request: web.BaseRequest, tokens: Collection[str]) -> None:
    """Raise 401 unless `tokens` is empty or the request carries `Authorization: Bearer <one of them>`."""
    if not tokens:
        return
    given = bearer_token(request)
    if given is None:
        raise Unauthorized("this server needs an access token: send 'Authorization: Bearer <token>'")
    # compare_digest on every token, so the time taken does not reveal a prefix match.
    matches = [hmac.compare_digest(given.encode(), token.encode()) for token in tokens]
    if not any(matches):
        raise Unauthorized("the access token is not valid; check the token you were given")
