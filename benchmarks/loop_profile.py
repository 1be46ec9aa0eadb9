#!/usr/bin/env python3
"""Where uploadsrv's event loop spends its time during a one-shot upload: the profile
behind "less on the loop" in docs/performance.md.

    python3 benchmarks/loop_profile.py [--runs N] [--size-mib N] [--no-py-spy]

Starts uploadsrv by its CLI as one process (server.workers = 1), uploads a media file
with curl `--runs` times and prints the CPU-seconds per GiB of the event-loop thread and
of all other threads together (from /proc), then samples one more upload with py-spy
(Python stacks of every thread, 200 Hz) and sorts the loop thread's samples by what its
innermost frame was doing. Owns only this measurement; servers, sources and curl come
from the benchmark's own modules, in benchmarks/.venv.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client  # noqa: E402  (these four are stdlib only, usable before the venv exists)
import environment  # noqa: E402
import servers  # noqa: E402
import sources  # noqa: E402

GIB = 1 << 30
# (label, substrings of the innermost frame "function (file:line)"), first match wins.
CATEGORIES = (
    ("socket reads (recv into a new bytes)", ("_read_ready__data_received",)),
    ("epoll and wake-ups from threads", ("select (selectors.py", "_read_from_self", "_process_events")),
    ("aiohttp HTTP parser and feed_data", ("aiohttp/web_protocol.py", "feed_data")),
    ("body reads and joins (iter_chunked)", ("aiohttp/streams.py",)),
    ("streaming-form-data parser", ("streaming_form_data/",)),
    ("uploadsrv's own code", ("uploadsrv/",)),
    ("asyncio scheduling", ("asyncio/",)),
)


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU-seconds so far of the process's main (event-loop) thread and of all others."""
    tick = os.sysconf("SC_CLK_TCK")
    loop = others = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a thread that ended between listing and reading
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(tid) == pid:
            loop += seconds
        else:
            others += seconds
    return loop, others


def categorise(raw: Path, pid: int) -> tuple[collections.Counter[str], int]:
    """The loop thread's samples by category, from py-spy's raw (collapsed) output."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if f"({pid})" not in frames[0]:
            continue  # another thread
        leaf, samples = frames[-1], int(number)
        total += samples
        label = next((name for name, marks in CATEGORIES if any(m in leaf for m in marks)), "other")
        counts[label] += samples
    return counts, total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/loop_profile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="uploads measured by /proc (default 4)")
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--no-py-spy", action="store_true", help="only the per-thread CPU figures")
    args = parser.parse_args(argv)
    if not environment.in_bench_venv():
        environment.ensure_venv()
        environment.reexec_in_venv(Path(__file__).resolve(), argv)

    source = sources.media_source(environment.CACHE_DIR, args.size_mib << 20)
    gib = source.size / GIB
    with tempfile.TemporaryDirectory(prefix="uploadsrv-loop-") as folder:
        root = Path(folder)
        server = servers.start_uploadsrv(root, servers.LaunchOptions(uploadsrv_workers=1))
        try:
            loop_cpu, other_cpu = [], []
            for run in range(args.runs):
                before = thread_cpu(server.pid)
                result = client.upload_once(server.url("/upload"), source.path, "multipart",
                                            root / "response.json", expect_100=False, max_seconds=600)
                after = thread_cpu(server.pid)
                if result.status != 201 or (result.body or {}).get("sha256") != source.sha256:
                    raise SystemExit(f"loop_profile: upload {run + 1} failed: {result.status} {result.error}")
                server.clear()
                loop_cpu.append((after[0] - before[0]) / gib)
                other_cpu.append((after[1] - before[1]) / gib)
            print(f"uploadsrv, one process, {args.runs} uploads of {args.size_mib} MiB (curl -F), CPU-s/GiB:\n")
            print("| thread | median | runs |\n|---|---|---|")
            for name, values in (("event loop", loop_cpu), ("all other threads", other_cpu)):
                print(f"| {name} | {sorted(values)[len(values) // 2]:.2f} | {' '.join(f'{v:.2f}' for v in values)} |")
            if not args.no_py_spy:
                profile(server, source, root)
        finally:
            server.stop()
    return 0


def profile(server: servers.RunningServer, source: sources.SourceFile, root: Path) -> None:
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("\npy-spy is not installed in benchmarks/.venv: no stack profile")
        return
    raw = root / "profile.txt"
    spy = subprocess.Popen([py_spy, "record", "--pid", str(server.pid), "--rate", "200", "--threads",
                            "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result = client.upload_once(server.url("/upload"), source.path, "multipart",
                                root / "response.json", expect_100=False, max_seconds=600)
    spy.send_signal(2)  # py-spy writes its output when interrupted
    _, err = spy.communicate(timeout=60)
    if result.status != 201 or not raw.exists():
        print(f"\nno stack profile: upload {result.status}; py-spy: {err.strip()[-300:]}")
        return
    counts, total = categorise(raw, server.pid)
    print(f"\nThe event loop's samples during one more upload (py-spy, 200 Hz, {total} samples):\n")
    print("| innermost frame | samples | share |\n|---|---|---|")
    for label, samples in counts.most_common():
        print(f"| {label} | {samples} | {samples / max(total, 1):.0%} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
