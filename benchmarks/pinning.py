"""Pinning the servers, the clients and the S3 engine to CPUs: --server-cpus,
--client-cpus and --engine-cpus.

Owns parsing a CPU list ("0", "0-3", "0,2-3"), the `taskset --cpu-list` prefix every
server command is started with (a process's affinity is inherited by its threads and
by every child it forks or spawns, so workers stay on the server's CPUs), pinning the
benchmark's own process to the client CPUs (curl, the tus client subprocess and the
/health prober thread are then all on them: children inherit the affinity), and reading
back the CPUs that every thread of a server's process tree may run on, so the report
can show a server that moved itself elsewhere. The S3 case's engine runs on the server
CPUs unless --engine-cpus gives it CPUs of its own (as an engine on its own machines has:
then boto3's row is the engine's ceiling, not a share of the uploader's CPUs). Does not
start anything itself.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


def parse_cpus(text: str) -> frozenset[int]:
    """The CPUs of a list such as "1", "0-3" or "0,2-3"; raises ValueError."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list (e.g. 0, 0-3, 0,2-3)")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"{part!r}: the range runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int] | set[int]) -> str:
    """The shortest list for these CPUs: {0, 1, 2, 5} -> "0-2,5"."""
    ordered, parts = sorted(cpus), []
    index = 0
    while index < len(ordered):
        end = index
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[index], ordered[end]
        parts.append(str(first) if first == last else f"{first}-{last}")
        index = end + 1
    return ",".join(parts)


@dataclass(frozen=True)
class Pinning:
    """Where servers and clients run; None means "wherever the kernel likes"."""
    server_cpus: frozenset[int] | None = None
    client_cpus: frozenset[int] | None = None
    # The benchmark's affinity before pinning itself: what an unpinned server gets, so
    # that --client-cpus alone does not also confine the servers (children inherit).
    everywhere: frozenset[int] = frozenset()
    engine_cpus: frozenset[int] | None = None

    def server_prefix(self) -> list[str]:
        """The command prefix that starts a server on its CPUs (empty: no pinning)."""
        if self.server_cpus is None and self.client_cpus is None and self.engine_cpus is None:
            return []
        return ["taskset", "--cpu-list", format_cpus(self.servers_on)]

    def engine_prefix(self) -> list[str]:
        """The command prefix for the S3 engine: its own CPUs, else the servers'."""
        if self.engine_cpus is None:
            return self.server_prefix()
        return ["taskset", "--cpu-list", format_cpus(self.engine_cpus)]

    @property
    def servers_on(self) -> frozenset[int]:
        """The CPUs every server's threads should be on."""
        return self.server_cpus if self.server_cpus is not None else self.everywhere

    def expected(self, key: str, engine_keys: frozenset[str]) -> frozenset[int]:
        """The CPUs the threads of the server (or engine) `key` should be on."""
        if key in engine_keys and self.engine_cpus is not None:
            return self.engine_cpus
        return self.servers_on

    def describe(self) -> str:
        if self.server_cpus is None and self.client_cpus is None and self.engine_cpus is None:
            return "Pinning: none (servers and clients run wherever the kernel puts them)."
        servers = (f"on CPUs {format_cpus(self.server_cpus)} (taskset; their threads and "
                   "worker processes inherit it)" if self.server_cpus is not None
                   else f"not pinned (CPUs {format_cpus(self.everywhere)})")
        clients = (f"on CPUs {format_cpus(self.client_cpus)} (the benchmark process pinned "
                   "itself, so curl, the tus client subprocess and the /health prober "
                   "thread inherit it)" if self.client_cpus is not None else "not pinned")
        engine = ("" if self.engine_cpus is None
                  else f"; the S3 engine on CPUs {format_cpus(self.engine_cpus)} of its own (taskset)")
        return f"Pinning: servers {servers}; clients {clients}{engine}."


def make_pinning(server_cpus: str | None, client_cpus: str | None, engine_cpus: str | None = None) -> Pinning:
    """Check the lists against the CPUs this process may use; raises ValueError."""
    available = frozenset(os.sched_getaffinity(0))
    chosen = []
    for name, text in (("--server-cpus", server_cpus), ("--client-cpus", client_cpus),
                       ("--engine-cpus", engine_cpus)):
        cpus = None if text is None else parse_cpus(text)
        if cpus is not None and not cpus <= available:
            raise ValueError(f"{name} {text}: only CPUs {format_cpus(available)} are available")
        chosen.append(cpus)
    pinning = Pinning(chosen[0], chosen[1], available, chosen[2])
    if (pinning.server_prefix() or pinning.engine_prefix()) and shutil.which("taskset") is None:
        raise ValueError("pinning needs taskset (util-linux), which is not on PATH")
    return pinning


def pin_this_process(pinning: Pinning) -> None:
    """Pin the benchmark (and so every client it starts later) to the client CPUs."""
    if pinning.client_cpus is not None:
        os.sched_setaffinity(0, pinning.client_cpus)


def tree_cpus(pids: list[int]) -> frozenset[int]:
    """Every CPU that some thread of these processes may run on."""
    cpus: set[int] = set()
    for pid in pids:
        try:
            threads = [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue  # the process ended
        for thread in threads:
            try:
                cpus |= os.sched_getaffinity(thread)
            except OSError:
                continue
    return frozenset(cpus)


def observed_line(pinning: Pinning, seen: dict[str, frozenset[int]],
                  labels: dict[str, str], engine_keys: frozenset[str] = frozenset()) -> str:
    """What the servers' threads were allowed on, checked after start-up and each run.

    Empty when nothing was pinned and no server confined itself either.
    """
    as_asked = all(cpus == pinning.expected(key, engine_keys) for key, cpus in seen.items())
    if not seen or (pinning.server_prefix() == [] and as_asked):
        return ""
    if as_asked:
        engine = ("" if pinning.engine_cpus is None or not engine_keys & seen.keys()
                  else f" (the S3 engine's on CPUs {format_cpus(pinning.engine_cpus)})")
        return ("Checked after start-up and after every run: every thread of every "
                f"server process was on CPUs {format_cpus(pinning.servers_on)}{engine}.")
    parts = [f"{labels.get(key, key)} {format_cpus(cpus)}" for key, cpus in seen.items()]
    return f"NOT AS ASKED: server threads were allowed on CPUs: {'; '.join(parts)}."
