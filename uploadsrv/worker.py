"""One worker process, from the moment it is forked: it drops what belongs to the
supervisor, builds its app, runs server.serve on the inherited listening sockets, and
reports to the supervisor (workers.py) through its pipe and the shared memory.

It must not return into the supervisor's code (it ends with os._exit), speak to systemd
(the supervisor speaks for the group), or start processes of its own beyond what the
app does (completion hooks).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web

from .capacity import ActiveUploads, SharedUploadSlots
from .config import Config
from .server import DRAIN_POLL_S, StartupError, serve

log = logging.getLogger("uploadsrv")

AppFactory = Callable[[ActiveUploads], web.Application]

# The second stop signal of the supervisor: ends the grace at once. (SIGTERM can reach a
# worker twice, from the supervisor and from systemd's KillMode=control-group, so it
# only ever starts the drain.)
HURRY_SIGNAL = signal.SIGUSR1
# How long a draining worker waits for the other workers to close the listener.
LISTENERS_CLOSE_WAIT_S = 2.0
PR_SET_PDEATHSIG = 1
# systemd's variables are meant for the main process, not for a worker or its hooks.
SUPERVISOR_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
                       "LISTEN_FDNAMES")


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker inherits from the supervisor."""

    config: Config
    sockets: list[socket.socket]
    make_app: AppFactory
    slots: SharedUploadSlots
    listening: mmap.mmap  # one byte per worker: 1 while it accepts connections
    beat: float | None  # seconds between heartbeats (systemd's watchdog is on), or None
    supervisor: int  # pid


def become_worker(plan: WorkerPlan, index: int, channel: int, release: Callable[[], None],
                  signals: Iterable[signal.Signals]) -> NoReturn:
    """Run worker `index` in a freshly forked child, with `signals` still blocked: drop the
    supervisor's descriptors (`release`), report through `channel`. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)  # the supervisor's pipe: a worker's signal must not land there
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Ctrl-C reaches the whole process group; the supervisor forwards it as SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        _die_with(plan.supervisor)
        release()
        for name in SUPERVISOR_ONLY_ENV:
            os.environ.pop(name, None)
        code = _work(plan, index, channel)
    except BaseException:
        log.exception("worker %d crashed", index)
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _work(plan: WorkerPlan, index: int, channel: int) -> int:
    link = SupervisorLink(channel, index, plan.listening, plan.beat)
    active = ActiveUploads(plan.config.limits.max_concurrent_uploads, plan.slots, index)
    try:
        asyncio.run(serve(plan.make_app(active), plan.config.server, plan.sockets, observer=link,
                          signals=(signal.SIGTERM,), hurry_signals=(HURRY_SIGNAL,)))
    except StartupError as error:
        link.say(f"error {error}")
        return 1
    return 0


class SupervisorLink:
    """A worker's `RunObserver`: it reports to the supervisor, which speaks for the group.
    Words on the pipe: "ready", "error <text>", "beat"."""

    def __init__(self, channel: int, index: int, listening: mmap.mmap, beat: float | None) -> None:
        os.set_blocking(channel, False)  # a full pipe must never stall the event loop
        self._channel, self._index, self._listening, self._beat = channel, index, listening, beat

    def say(self, words: str) -> None:
        try:
            os.write(self._channel, words.replace("\n", " ").encode() + b"\n")
        except (BlockingIOError, BrokenPipeError):
            pass  # a full pipe loses one heartbeat; a broken one means the supervisor is gone

    def serving(self) -> None:
        self._listening[self._index] = 1
        self.say("ready")

    def stopping(self, grace: float) -> None:
        return  # the supervisor told systemd when it got the signal

    async def listener_closed(self) -> None:
        # The listener is one kernel socket in every worker: new connections are refused
        # only once all of them have closed it (the supervisor closed its copy first).
        self._listening[self._index] = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTENERS_CLOSE_WAIT_S
        while any(self._listening[:]) and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)

    async def keep_alive(self) -> None:
        # Beats come from the event loop on purpose: a loop stuck for the whole
        # WatchdogSec= is the hang systemd should restart the service for.
        while self._beat is not None:
            self.say("beat")
            await asyncio.sleep(self._beat)

    def close(self) -> None:
        return  # the pipe closes with the process, after a start-up error has been said


def _die_with(supervisor: int) -> None:
    """Have the kernel kill this worker when the supervisor dies, as it would a single process."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned worker then serves on until it is stopped
    if os.getppid() != supervisor:
        os._exit(1)  # the supervisor died before the request took effect
