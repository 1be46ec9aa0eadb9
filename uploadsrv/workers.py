"""The supervisor: several worker processes serving one listening socket.

Owns the worker processes: their start, the watch over them (readiness, heartbeats,
exits), their restart, the signals they get, and what systemd hears about the group
(READY, STATUS, WATCHDOG, STOPPING; the unit has NotifyAccess=main). It must not build
the app (it is handed a factory), serve HTTP (a worker runs server.serve: worker.py is
the child's side), or touch storage.

Fork model. The main process binds the listening sockets (cli.py; or takes systemd's),
then the supervisor `os.fork()`s the workers; they inherit the sockets and all accept on
them, each with an app and an event loop of its own. Plain fork rather than multiprocessing: the supervisor
needs each worker's exact exit status or signal (waitpid), nothing has to be pickled (the
sockets, the shared memory and the config are simply inherited), and no resource-tracker
process comes along. The supervisor runs no event loop and no thread, so a fork copies a
quiet process (no lock held by another thread, no loop state); a child never returns
into the supervisor's code, it ends with os._exit.

Signals. SIGTERM or SIGINT to the main process: it closes its copy of the listeners,
sends STOPPING=1 and SIGTERM to every worker and waits for them; each drains like the
single process (stops accepting, lets requests finish within server.shutdown_timeout,
cancels the rest, exits 0). A second one sends HURRY_SIGNAL, which ends the workers'
grace at once. A worker takes SIGTERM once only, so systemd's KillMode=control-group
(SIGTERM to every process of the unit) does not cut the grace short; it ignores SIGINT,
which Ctrl-C sends to the whole process group (the supervisor forwards it). A worker
dies with the supervisor (PR_SET_PDEATHSIG), as a crashed single process would.

What the supervisor learns. Each worker has a pipe to it: "ready" once it serves, "error
<text>" when it cannot start, "beat" every watchdog interval when systemd's watchdog is
on (WATCHDOG=1 is sent only while every worker beats: a stuck worker gets the service
restarted, as a stuck single process does). Shared memory made before fork: the upload
counts (capacity.SharedUploadSlots) and one "listening" byte per worker, so that a
draining worker goes on only once every process has closed the listener.

Metrics hook. cli.py sets PROMETHEUS_MULTIPROC_DIR before the workers exist (and before
prometheus_client is imported); `on_worker_exit(pid)` is called for every worker that
ends, which is where `prometheus_client.multiprocess.mark_process_dead(pid)` belongs.
"""

from __future__ import annotations

import gc
import logging
import mmap
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from .capacity import SharedUploadSlots
from .config import Config
from .notify import Notifier, watchdog_interval
from .server import CANCEL_WAIT_S, SHUTDOWN_SIGNALS, STATUS_POLL_S, StartupError, StatusLine, stopping_assignments
from .worker import HURRY_SIGNAL, AppFactory, WorkerPlan, become_worker

log = logging.getLogger("uploadsrv")

WATCHED_SIGNALS = (*SHUTDOWN_SIGNALS, signal.SIGCHLD)
# A worker that ends before it serves is started again after a delay that doubles with
# each such failure in a row: a broken disk must not become a fork loop.
FIRST_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
# Stragglers are killed this long after the grace and aiohttp's cancel waits have passed.
KILL_MARGIN_S = 5.0


@dataclass
class _Worker:
    index: int
    pid: int
    channel: int  # the read end of its pipe
    started: float
    ready: bool = False
    last_word: float = 0.0
    unread: bytes = b""
    error: str = ""


class Supervisor:
    """Runs `count` workers on `sockets` until a shutdown signal; `run()` gives the exit status."""

    def __init__(self, config: Config, sockets: list[socket.socket], count: int, make_app: AppFactory,
                 on_worker_exit: Callable[[int], None] | None = None) -> None:
        self._config, self._sockets, self._count = config, sockets, count
        self._on_worker_exit = on_worker_exit
        self._slots = SharedUploadSlots(count)
        self._listening = mmap.mmap(-1, count)
        self._notifier = Notifier.from_environ()
        self._status = StatusLine(self._slots.total, self._notifier)
        self._watchdog = watchdog_interval() if self._notifier.enabled else None
        self._plan = WorkerPlan(config, sockets, make_app, self._slots, self._listening, self._watchdog, os.getpid())
        self._workers: dict[int, _Worker] = {}  # by pid
        self._restarts: dict[int, float] = {}  # worker index -> when to start it again
        self._failures = [0] * count  # by worker index: ends before serving, in a row
        self._selector = selectors.PollSelector()  # poll keeps no kernel object a child could share
        self._wake_read, self._wake_write = os.pipe()
        self._ready_sent = self._stopping = self._unclean = False
        self._kill_at: float | None = None
        self._next_status = self._next_ping = 0.0
        self._startup_error: str | None = None

    def run(self) -> int:
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        # The wakeup fd carries the signal numbers into the select loop; the handlers
        # themselves do nothing.
        previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, _noted) for signum in WATCHED_SIGNALS}
        # Objects made so far are shared with every worker; moved out of the collector's
        # sight, its passes in the workers do not write to (and so copy) their pages.
        gc.freeze()
        try:
            for index in range(self._count):
                try:
                    self._start_worker(index)
                except OSError as error:
                    self._startup_error = f"cannot start worker {index}: {error}"
                    self._stop()
                    break
            self._watch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_wakeup)
            self._close()
        if self._startup_error is not None:
            raise StartupError(self._startup_error)
        log.info("stopped")
        return 1 if self._unclean else 0

    def _watch(self) -> None:
        now = time.monotonic()
        self._next_status, self._next_ping = now + STATUS_POLL_S, now
        while self._workers or not self._stopping:
            deadlines = [self._next_status, *self._restarts.values()]
            if self._watchdog is not None:
                deadlines.append(self._next_ping)
            if self._kill_at is not None:
                deadlines.append(self._kill_at)
            for key, _ in self._selector.select(max(0.0, min(deadlines) - time.monotonic())):
                if key.fd == self._wake_read:
                    self._on_signals()
                else:
                    self._read_words(key.data)
            self._reap()
            self._keep_up(time.monotonic())

    def _keep_up(self, now: float) -> None:
        """Whatever is due: restarts, READY, STATUS, WATCHDOG, killing stragglers."""
        for index, due in list(self._restarts.items()):
            if now >= due:
                del self._restarts[index]
                self._restart(index)
        if not self._ready_sent and not self._stopping and len(self._workers) == self._count \
                and all(worker.ready for worker in self._workers.values()):
            self._ready_sent = True
            self._status.send("READY=1")
            log.info("serving with %d workers", self._count)
        if now >= self._next_status:
            self._next_status = now + STATUS_POLL_S
            if self._ready_sent or self._stopping:
                self._status.refresh()
        if self._watchdog is not None and now >= self._next_ping:
            self._next_ping = now + self._watchdog
            self._ping_watchdog(now, 2 * self._watchdog)
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            for worker in self._workers.values():
                log.warning("worker %d (pid %d) still running long after SIGTERM: killing it", worker.index, worker.pid)
                self._unclean = True
                _send(worker.pid, signal.SIGKILL)

    def _on_signals(self) -> None:
        try:
            received = os.read(self._wake_read, 64)
        except BlockingIOError:
            return
        for signum in received:
            if signum == signal.SIGCHLD:
                continue  # every turn of the loop reaps
            name = signal.Signals(signum).name
            if self._stopping:
                log.warning("%s again: not waiting any longer", name)
                for pid in self._workers:
                    _send(pid, HURRY_SIGNAL)
            else:
                log.info("%s: stopping; new connections are refused", name)
                self._stop()

    def _stop(self) -> None:
        self._stopping = True
        self._restarts.clear()
        for sock in self._sockets:
            sock.close()  # our copy; once the workers close theirs, connections are refused
        grace = self._config.server.shutdown_timeout
        if self._startup_error is None:
            self._status.phase = "stopping"
            self._status.send(*stopping_assignments(grace))
        for pid in self._workers:
            _send(pid, signal.SIGTERM)
        self._kill_at = time.monotonic() + grace + 2 * CANCEL_WAIT_S + KILL_MARGIN_S

    def _read_words(self, worker: _Worker) -> None:
        while True:
            try:
                chunk = os.read(worker.channel, 4096)
            except BlockingIOError:
                return
            if not chunk:  # the worker is ending; waitpid will tell how
                self._selector.unregister(worker.channel)
                return
            worker.last_word = time.monotonic()
            *lines, worker.unread = (worker.unread + chunk).split(b"\n")
            for line in lines:
                word, _, text = line.decode(errors="replace").partition(" ")
                if word == "ready":
                    worker.ready = True
                    self._failures[worker.index] = 0
                elif word == "error":
                    worker.error = text

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if (worker := self._workers.pop(pid, None)) is not None:
                self._ended(worker, status)

    def _ended(self, worker: _Worker, status: int) -> None:
        if worker.channel in self._selector.get_map():
            self._read_words(worker)  # what it said last (a start-up error) is still in the pipe
        if worker.channel in self._selector.get_map():
            self._selector.unregister(worker.channel)
        os.close(worker.channel)
        self._slots.reset(worker.index)  # the uploads it held are gone with it
        self._listening[worker.index] = 0
        if self._on_worker_exit is not None:
            self._on_worker_exit(worker.pid)
        name, how = f"worker {worker.index} (pid {worker.pid})", _describe_exit(status)
        why = f" ({worker.error})" if worker.error else ""
        if self._stopping:
            # Killed by our signal before it served: it was told to stop while starting up.
            told = not worker.ready and os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGTERM, HURRY_SIGNAL)
            if status != 0 and not told and self._startup_error is None:  # (else the others fail alike)
                log.warning("%s %s%s while stopping", name, how, why)
                self._unclean = True
        elif not self._ready_sent:
            self._startup_error = worker.error or f"{name} {how} while starting"
            self._stop()
        else:
            if not worker.ready:
                self._failures[worker.index] += 1
            failures = self._failures[worker.index]
            delay = min(FIRST_RESTART_DELAY_S * 2 ** (failures - 1), MAX_RESTART_DELAY_S) if failures else 0.0
            log.warning("%s %s%s; starting a new one%s", name, how, why, f" in {delay:g}s" if delay else "")
            self._restarts[worker.index] = time.monotonic() + delay

    def _restart(self, index: int) -> None:
        try:
            self._start_worker(index)
        except OSError as error:
            self._failures[index] += 1
            log.error("cannot start worker %d: %s; trying again in %gs", index, error, MAX_RESTART_DELAY_S)
            self._restarts[index] = time.monotonic() + MAX_RESTART_DELAY_S

    def _ping_watchdog(self, now: float, timeout: float) -> None:
        silent = [worker for worker in self._workers.values()
                  if now - max(worker.started, worker.last_word) >= timeout]
        if not silent:
            self._notifier.send("WATCHDOG=1")
            return
        for worker in silent:
            log.warning("worker %d (pid %d) silent for %.1fs: no WATCHDOG=1", worker.index, worker.pid,
                        now - max(worker.started, worker.last_word))

    def _start_worker(self, index: int) -> None:
        read_end, write_end = os.pipe()
        # Signals wait until the child has dropped the supervisor's handlers and wakeup fd.
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                become_worker(self._plan, index, write_end, lambda: self._release_in_child(read_end), WATCHED_SIGNALS)
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # (the child never comes back from become_worker)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED_SIGNALS)
        os.set_blocking(read_end, False)
        worker = _Worker(index, pid, read_end, started=time.monotonic())
        self._workers[pid] = worker
        self._listening[index] = 0
        self._selector.register(read_end, selectors.EVENT_READ, worker)
        log.info("worker %d started (pid %d)", index, pid)

    def _release_in_child(self, read_end: int) -> None:
        """What a new worker must not keep of the supervisor's."""
        for fd in (read_end, self._wake_read, self._wake_write, *(worker.channel for worker in self._workers.values())):
            os.close(fd)
        self._notifier.close()

    def _close(self) -> None:
        for worker in self._workers.values():
            os.close(worker.channel)
        for sock in self._sockets:
            sock.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._selector.close()
        self._notifier.close()
        self._listening.close()
        self._slots.close()


def _noted(signum: int, frame: object) -> None:
    """A handler that lets the wakeup fd carry the signal (the default would end us or ignore it)."""


def _send(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it has just ended; waitpid will tell


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
