"""Admission: which upload requests may start, decided once from the request head.

Each upload route has one `RoutePolicy`; `admit()` applies it in one order (401, the
route's own header rules such as tus 412/400, 415, 413, 429, 507) and is called by the
route's `Expect: 100-continue` handler (before the client sends a byte) and by the
route's handler, through `guarded()`, for clients that send no Expect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from .appkeys import ACTIVE_UPLOADS, CONFIG, OUTCOMES, STORAGE
from .auth import check_token
from .capacity import check_free_space
from .config import Config
from .errors import FileTooLarge, UnsupportedMediaType, UploadError, format_size
from .http_errors import error_response, json_error, refuse

ADMITTED = web.RequestKey("admitted", bool)


@dataclass(frozen=True)
class RoutePolicy:
    """What one upload route checks before it reads a body."""

    # Body Content-Types the route takes (415 otherwise), with what to say instead.
    kind: str  # "multipart" or "tus", for metrics and logs
    content_types: tuple[str, ...]
    content_type_hint: str
    # The largest acceptable declared size: a Content-Length, or what `declared` returns.
    max_declared: Callable[[Config], int]
    # The size the request announces (for 413 and 507); Content-Length unless overridden.
    declared: Callable[[web.BaseRequest], int | None] = lambda request: request.content_length
    # Route rules on the headers that come before the rest (tus: 412, 400s).
    head_rules: Callable[[web.BaseRequest, Config], None] = lambda request, config: None
    # Whether the request counts against `limits.max_concurrent_uploads`.
    takes_slot: Callable[[web.BaseRequest], bool] = lambda request: True
    # Body Content-Type may be absent (tus creation without data).
    body_optional: bool = False


async def admit(request: web.Request, policy: RoutePolicy) -> None:
    """Raise the first refusal the head alone justifies; return when the upload may start."""
    config = request.app[CONFIG]
    check_token(request, config.auth.tokens)
    policy.head_rules(request, config)
    content_type = request.content_type if "Content-Type" in request.headers else ""
    if content_type not in policy.content_types and not (policy.body_optional and not _has_body(request)):
        raise UnsupportedMediaType(
            f"{request.path} takes {policy.content_type_hint}, not {content_type or 'a body without Content-Type'}"
        )
    declared = policy.declared(request)
    limit = policy.max_declared(config)
    if declared is not None and declared > limit:
        raise FileTooLarge(
            f"the upload ({format_size(declared)}) is larger than this server accepts "
            f"(files up to {format_size(config.limits.max_file_size)} each)"
        )
    if policy.takes_slot(request):
        request.app[ACTIVE_UPLOADS].check_room()
        free = await request.app[STORAGE].free_space()
        check_free_space(free, config.storage.min_free_space, declared)


def _has_body(request: web.BaseRequest) -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(policy: RoutePolicy, handler: Handler) -> Handler:
    """The handler behind its policy, holding an upload slot while it runs."""

    async def run(request: web.Request) -> web.StreamResponse:
        outcomes = request.app[OUTCOMES]
        outcomes.request_started(policy.kind)
        try:
            if not request.get(ADMITTED):
                await admit(request, policy)
            if not policy.takes_slot(request):
                return await handler(request)
            with request.app[ACTIVE_UPLOADS].admit():
                return await handler(request)
        except UploadError as error:
            outcomes.refused(policy.kind, error.code, error.status, request.match_info.get("file_id"))
            raise
        except (ConnectionError, asyncio.CancelledError):
            outcomes.refused(policy.kind, "client_aborted", 499, request.match_info.get("file_id"))
            raise
        finally:
            outcomes.request_ended(policy.kind, request.content.total_bytes)

    return run


def expect_handler(policy: RoutePolicy) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """The route's `Expect: 100-continue` handler: 100 only for an upload `admit` accepts."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        value = request.headers.get("Expect", "")
        if value.lower() != "100-continue":
            return await refuse(request, json_error(
                417, "expectation_failed",
                f"this server understands only 'Expect: 100-continue', not {value!r}; send the request without it"))
        try:
            await admit(request, policy)
        except UploadError as error:
            request.app[OUTCOMES].refused(policy.kind, error.code, error.status, request.match_info.get("file_id"))
            return await refuse(request, error_response(error))
        request[ADMITTED] = True
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    return expect
