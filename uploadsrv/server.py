"""The run: listen, tell systemd how it goes, and drain gracefully on SIGTERM or SIGINT.

Owns the life of one built app: the aiohttp runner and its sites on the listening
sockets, the shutdown signals, the drain, and what is said about it (a `RunObserver`):
sd_notify messages (READY, STATUS, WATCHDOG, STOPPING) for a single process, or the
worker's reports to its supervisor (workers.py) when several processes serve. It must
not build the app (app.py), read arguments or config files (cli.py), start processes
(workers.py), or touch storage: cancelled upload handlers remove their own temp files.

Why a drain of our own: aiohttp's shutdown (`runner.cleanup()`) closes every connection
to further reads at once, so an upload whose body is still arriving could never finish
within its grace. We therefore stop the listener, wait while requests are in flight (up
to `server.shutdown_timeout`), cancel the handlers still running (`request.task`, the
hook aiohttp documents for this), and only then hand over to aiohttp's shutdown.

"In flight" is a request inside the app's middleware chain, downloads included (they
stream from their handler). A response that aiohttp would send after its handler
returned (a `web.FileResponse`; none today) would not be counted: it would get only
`CANCEL_WAIT_S` after the drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import ACTIVE_UPLOADS
from .config import ServerConfig
from .http_protocol import make_runner
from .logs import AccessLogger
from .notify import Notifier, watchdog_interval

log = logging.getLogger("uploadsrv")

# SIGTERM is what systemd (and `kill`) sends to stop a service; SIGINT is Ctrl-C in a
# terminal. Both drain. A second one of either skips what is left of the grace.
# SIGHUP keeps its default (terminate): there is no config reload to map it to.
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# How often the drain looks at the in-flight count: short next to any grace, long
# enough to cost nothing.
DRAIN_POLL_S = 0.05
# How often STATUS= is recomputed; it is sent only when its text changed.
STATUS_POLL_S = 1.0
# After the grace: how long cancelled handlers get to end (a cancelled upload removes
# its part in the I/O pool), and then how long aiohttp's own shutdown waits for
# responses still being sent before it closes their connections.
CANCEL_WAIT_S = 2.0
# systemd's stop timeout is extended to the grace plus this, so that a grace set longer
# than the unit's TimeoutStopSec= is still honoured.
STOP_MARGIN_S = 15.0


class StartupError(Exception):
    """The server could not start (address in use, storage folders unusable)."""


class InFlightRequests:
    """The requests inside the app right now, tracked by its outermost middleware."""

    def __init__(self) -> None:
        # Keyed by id(): a request is a mutable mapping, so it cannot be a set member.
        self._requests: dict[int, web.BaseRequest] = {}
        self.draining = False

    @property
    def count(self) -> int:
        return len(self._requests)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._requests[id(request)] = request
        try:
            response = await handler(request)
        finally:
            del self._requests[id(request)]
        if self.draining:
            # Keep-alive would let the client start a new request on this connection
            # while we wait for the others to end.
            response.force_close()
        return response

    def cancel_all(self) -> None:
        """Cancel the tasks serving the requests in flight (their connections close)."""
        for request in self._requests.values():
            request.task.cancel()


IN_FLIGHT = web.AppKey("in_flight_requests", InFlightRequests)


class RunObserver(Protocol):
    """Who hears how the run goes: systemd (one process) or the supervisor (a worker)."""

    def serving(self) -> None:
        """The sites accept connections."""

    def stopping(self, grace: float) -> None:
        """A shutdown signal came; the drain of up to `grace` seconds begins."""

    async def listener_closed(self) -> None:
        """This process stopped accepting; return once new connections are refused."""

    async def keep_alive(self) -> None:
        """Runs from `serving()` until the run ends (status updates, watchdog pings)."""

    def close(self) -> None:
        """The run is over."""


async def serve(app: web.Application, config: ServerConfig, sockets: Sequence[socket.socket] = (), *,
                observer: RunObserver | None = None, signals: Sequence[signal.Signals] = SHUTDOWN_SIGNALS,
                hurry_signals: Sequence[signal.Signals] = ()) -> None:
    """Serve `app` on `sockets` (systemd's, or the supervisor's) or else host:port until a
    shutdown signal, then drain. A second shutdown signal ends the grace at once; when
    `hurry_signals` are given, only those do (a worker's SIGTERM may come twice)."""
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()
    # Installed before start-up, so that a signal during it drains instead of raising
    # KeyboardInterrupt in the middle of the storage set-up.
    for signum in signals:
        loop.add_signal_handler(signum, _on_signal, signum, stop, hurry, not hurry_signals)
    for signum in hurry_signals:
        loop.add_signal_handler(signum, _on_hurry_signal, signum, stop, hurry)
    in_flight = InFlightRequests()
    app[IN_FLIGHT] = in_flight
    app.middlewares.insert(0, in_flight.middleware)  # outermost: counts refusals' discard too
    # Refusals below the app in JSON, garbage logged quietly, one access line per request.
    runner = make_runner(app, shutdown_timeout=CANCEL_WAIT_S, access_log_class=AccessLogger)
    if observer is None:
        observer = SystemdObserver(lambda: app[ACTIVE_UPLOADS].requests)
    background: list[asyncio.Task[None]] = []
    try:
        sites = await _start(runner, config, sockets)
        log.info("serving on %s", ", ".join(site.name for site in sites))
        observer.serving()
        background.append(asyncio.create_task(observer.keep_alive()))
        await stop.wait()
        grace = config.shutdown_timeout
        in_flight.draining = True
        observer.stopping(grace)
        for site in sites:
            await site.stop()  # the listener closes now: new connections are refused
        await observer.listener_closed()
        await _drain(app, in_flight, grace, hurry)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await runner.cleanup()  # cancels what is still running, then the app's cleanup_ctx
        observer.close()
        for signum in (*signals, *hurry_signals):
            loop.remove_signal_handler(signum)
    log.info("stopped")


async def _start(runner: web.AppRunner, config: ServerConfig, sockets: Sequence[socket.socket]) -> list[web.BaseSite]:
    try:
        await runner.setup()  # the app's start-up: storage folders are created and checked here
        sites: list[web.BaseSite] = [web.SockSite(runner, sock) for sock in sockets]
        if not sites:
            sites.append(web.TCPSite(runner, config.host, config.port))
        for site in sites:
            await site.start()
    except (OSError, RuntimeError) as error:
        raise StartupError(str(error)) from error
    return sites


def _on_signal(signum: signal.Signals, stop: asyncio.Event, hurry: asyncio.Event, repeat_hurries: bool) -> None:
    name = signal.Signals(signum).name
    if stop.is_set() and repeat_hurries:
        log.warning("%s again: not waiting any longer", name)
        hurry.set()
    elif stop.is_set():
        log.info("%s again: already stopping", name)
    else:
        log.info("%s: stopping; new connections are refused", name)
        stop.set()


def _on_hurry_signal(signum: signal.Signals, stop: asyncio.Event, hurry: asyncio.Event) -> None:
    log.warning("%s: not waiting any longer", signal.Signals(signum).name)
    stop.set()
    hurry.set()


async def _drain(app: web.Application, in_flight: InFlightRequests, grace: float, hurry: asyncio.Event) -> None:
    """Wait until no request is in flight, the grace has passed, or a second signal came;
    then cancel what is still running."""
    # Let requests whose headers arrived just before the listener closed reach the
    # app (and so the count).
    await asyncio.sleep(0)
    if in_flight.count == 0:
        log.info("no request in progress")
        return
    log.info("waiting up to %s for %s", _seconds(grace), _describe(app, in_flight))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _wait_until_idle(in_flight, grace, hurry)
    if in_flight.count == 0:
        log.info("all requests finished after %s", _seconds(loop.time() - started))
        return
    waited = loop.time() - started if hurry.is_set() else grace
    log.warning("aborted %s still running after %s", _describe(app, in_flight), _seconds(waited))
    in_flight.cancel_all()
    await _wait_until_idle(in_flight, CANCEL_WAIT_S, asyncio.Event())
    if in_flight.count:
        log.warning("%s did not end within %s of being cancelled", _count(in_flight.count, "request"),
                    _seconds(CANCEL_WAIT_S))


async def _wait_until_idle(in_flight: InFlightRequests, timeout: float, hurry: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while in_flight.count and loop.time() < deadline and not hurry.is_set():
        # Poll rather than wait on an event: a 50 ms lag in noticing the last request
        # end is nothing next to the grace, and the middleware stays a plain counter.
        await asyncio.sleep(DRAIN_POLL_S)


def _describe(app: web.Application, in_flight: InFlightRequests) -> str:
    """'1 upload', '2 uploads and 1 other request', '3 requests'."""
    uploads = min(app[ACTIVE_UPLOADS].here, in_flight.count)
    others = in_flight.count - uploads
    if not uploads:
        return _count(others, "request")
    if not others:
        return _count(uploads, "upload")
    return f"{_count(uploads, 'upload')} and {_count(others, 'other request')}"


def stopping_assignments(grace: float) -> tuple[str, ...]:
    """STOPPING=1, and systemd's stop timeout extended to the grace plus a margin."""
    return "STOPPING=1", f"EXTEND_TIMEOUT_USEC={int((grace + STOP_MARGIN_S) * 1_000_000)}"


class StatusLine:
    """STATUS= for systemctl status: the phase and how many uploads are in progress."""

    def __init__(self, uploads: Callable[[], int], notifier: Notifier) -> None:
        self.phase = "serving"
        self._uploads = uploads
        self._notifier = notifier
        self._sent: str | None = None

    def text(self) -> str:
        return f"{self.phase}; {_count(self._uploads(), 'upload')} in progress"

    def send(self, *assignments: str) -> None:
        """Send STATUS= (with other assignments, e.g. READY=1, in the same datagram)."""
        self._sent = self.text()
        self._notifier.send(*assignments, f"STATUS={self._sent}")

    def refresh(self) -> None:
        # Sent only on change: a busy server must not flood systemd with datagrams.
        if self.text() != self._sent:
            self.send()

    async def keep_current(self) -> None:
        while True:
            await asyncio.sleep(STATUS_POLL_S)
            self.refresh()


class SystemdObserver:
    """The single process tells systemd itself (Type=notify)."""

    def __init__(self, uploads: Callable[[], int]) -> None:
        self._notifier = Notifier.from_environ()
        self._status = StatusLine(uploads, self._notifier)

    def serving(self) -> None:
        self._status.send("READY=1")

    def stopping(self, grace: float) -> None:
        self._status.phase = "stopping"
        self._status.send(*stopping_assignments(grace))

    async def listener_closed(self) -> None:
        return  # our listener was the only one

    async def keep_alive(self) -> None:
        tasks = [self._status.keep_current()]
        if (interval := watchdog_interval()) is not None and self._notifier.enabled:
            tasks.append(_ping_watchdog(self._notifier, interval))
        await asyncio.gather(*tasks)

    def close(self) -> None:
        self._notifier.close()


async def _ping_watchdog(notifier: Notifier, interval: float) -> None:
    # Runs on the event loop on purpose: a loop blocked for the whole WatchdogSec= is
    # exactly the hang systemd should restart us for.
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _seconds(value: float) -> str:
    return f"{value:.3g}s" if value < 10 else f"{value:.0f}s"
