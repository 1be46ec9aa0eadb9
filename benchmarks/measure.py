"""What the benchmark observes about a running server: CPU time, memory, /health latency.

Owns reading /proc for a server's process tree (CPU seconds from utime+stime, VmRSS,
VmHWM), resetting the RSS high-water mark through /proc/<pid>/clear_refs (or, where the
kernel refuses that, sampling VmRSS every 10 ms from a thread), and the /health prober.
Does not start servers or uploads. Linux only; every loop here is bounded in time.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROBE_INTERVAL = 0.010
PROBE_TIMEOUT = 2.0
RSS_SAMPLE_INTERVAL = 0.010


def process_tree(pid: int) -> list[int]:
    """pid and its living descendants (a server may run worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces; everything after its ')' splits cleanly.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU of these processes, all their threads included."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # fields[0] is stat field 3 (state); utime and stime are fields 14 and 15.
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pids: list[int]) -> int:
    return sum(_status_kib(pid, "VmRSS") for pid in pids) * 1024


class PeakRss:
    """Peak resident memory of a process tree between reset() and peak().

    Prefers the kernel's own high-water mark (VmHWM, reset by writing 5 to clear_refs),
    which misses no spike; falls back to sampling VmRSS every 10 ms when that write is
    refused. `method` says which one is in use.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.method = "VmHWM after clear_refs" if self._clear_refs_works() else "VmRSS sampled every 10 ms"
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled_peak = 0

    def _clear_refs_works(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        hwm, rss = _status_kib(self.pid, "VmHWM"), _status_kib(self.pid, "VmRSS")
        # Right after a reset the high-water mark equals the current RSS (give or take
        # what was touched in between).
        return hwm > 0 and hwm <= rss + 1024

    def reset(self) -> None:
        self.pids = process_tree(self.pid)
        if self.method.startswith("VmHWM"):
            for pid in self.pids:
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    pass
            return
        self._stop.clear()
        self._sampled_peak = rss_bytes(self.pids)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self, limit_seconds: float = 3600.0) -> None:
        deadline = time.monotonic() + limit_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._sampled_peak = max(self._sampled_peak, rss_bytes(self.pids))
            self._stop.wait(RSS_SAMPLE_INTERVAL)

    def peak(self) -> int:
        if self.method.startswith("VmHWM"):
            return sum(_status_kib(pid, "VmHWM") for pid in self.pids) * 1024
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        return self._sampled_peak


@dataclass
class ProbeResult:
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0


class HealthProber:
    """Sends GET /health every 10 ms over one keep-alive connection, in a thread.

    A probe is timed from sending the request to having read the whole response. When
    a probe takes longer than the interval, the next one goes out at once (one request
    in flight at a time, so a stalled server is not flooded). A failed or non-200 probe
    counts as a failure and the connection is reopened. Bounded by `max_seconds`.
    """

    def __init__(self, port: int, max_seconds: float) -> None:
        self.port = port
        self.max_seconds = max_seconds
        self.result = ProbeResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HealthProber":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=PROBE_TIMEOUT + 1)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        start = time.perf_counter()
        deadline = start + self.max_seconds
        next_send = start
        try:
            while not self._stop.is_set() and time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    connection.request("GET", "/health")
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    connection.close()  # http.client reconnects on the next request
                elapsed_ms = (time.perf_counter() - sent) * 1000
                if ok:
                    self.result.latencies_ms.append(elapsed_ms)
                else:
                    self.result.failures += 1
                next_send += PROBE_INTERVAL
                wait = next_send - time.perf_counter()
                if wait > 0:
                    self._stop.wait(wait)
                else:
                    next_send = time.perf_counter()
        finally:
            connection.close()
