"""systemd's service notification protocol (sd_notify(3)) for `Type=notify` units.

Owns the datagram socket to `$NOTIFY_SOCKET` and the reading of `$WATCHDOG_USEC` /
`$WATCHDOG_PID`. It must not decide what to say or when (server.py does), must never
block the event loop, and must never stop the server: a message that cannot be sent is
logged and dropped, because systemd treats a missing message as a fault of its own
(start timeout, watchdog) and that is the right outcome.

Why no library: the protocol is one `sendto()` of newline-separated `KEY=value` lines to
an AF_UNIX datagram socket whose name starts with '@' for the abstract namespace. On
PyPI, `sdnotify` was last released in 2017, `systemd-python` and `cysystemd` bind the C
libsystemd (a compiler and headers, or a platform wheel) for those few lines.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; does nothing when the process was not started by systemd."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full receive queue must drop the message, not stall the event loop.
            self._socket.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *assignments: str) -> None:
        """Send `KEY=value` assignments in one datagram (systemd applies them together)."""
        if self._socket is None or self._address is None:
            return
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]  # Linux abstract socket namespace
        try:
            self._socket.sendto("\n".join(assignments).encode(), address)
        except OSError as error:  # BlockingIOError (queue full), the socket gone, ...
            log.warning("sd_notify %s to %s failed: %s", ",".join(a.split("=", 1)[0] for a in assignments),
                        self._address, error)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises), or None."""
    usec = environ.get("WATCHDOG_USEC", "")
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (e.g. our parent's wrapper)
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2_000_000
