#!/usr/bin/env python3
"""The benchmark's one command: uploadsrv side by side with the designs people would use.

    python3 benchmarks/run.py [--quick] [--cases KEY ...] [--runs N] [--out FILE]
                              [--server-cpus LIST] [--client-cpus LIST] [--engine-cpus LIST]
                              [--uploadsrv-workers N]

Builds (or reuses) benchmarks/.venv with the peers' packages and uploadsrv, re-executes
itself inside it, pins itself to the client CPUs, starts the five servers on loopback
(on the server CPUs), runs the cases, and prints the markdown report (also written to
--out). Owns only the orchestration: the command line, the working folder, the order of
cases, the report's header lines, and the report file. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import environment  # noqa: E402  (stdlib only, usable before the venv exists)

WARM_MEMORY = 8 * 2**30


def _available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark uploadsrv against aiohttp raw (with and without fsync), "
                    "the seed pattern and FastAPI.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 runs: a smoke check of about two minutes")
    parser.add_argument("--cases", nargs="+", metavar="CASE",
                        help="case keys or kinds (single, concurrent, tus, refusal) to run")
    parser.add_argument("--runs", type=int, help="runs per server and case (default 5, quick 3)")
    parser.add_argument("--out", type=Path,
                        default=environment.BENCH_DIR / "results" / "latest.md",
                        help="where to write the report (default benchmarks/results/latest.md)")
    parser.add_argument("--server-cpus", metavar="LIST",
                        help="run every server process (peers, uploadsrv and its workers) "
                             "on these CPUs, e.g. 0 or 0-3 (taskset)")
    parser.add_argument("--client-cpus", metavar="LIST",
                        help="run the clients (curl, the tus client, the /health prober: "
                             "the benchmark process itself) on these CPUs, e.g. 1")
    parser.add_argument("--engine-cpus", metavar="LIST",
                        help="run the S3 case's engine (SeaweedFS) on these CPUs, apart from "
                             "uploadsrv and the clients (default: the server CPUs)")
    parser.add_argument("--uploadsrv-workers", type=int, metavar="N",
                        help="set server.workers = N in uploadsrv's config (default: not set)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not environment.in_bench_venv():
        environment.ensure_venv()
        environment.reexec_in_venv(Path(__file__).resolve(), argv)

    # Only importable inside the venv (they import the peers' packages or need them).
    import cases
    import machine
    import pinning
    import report
    from refusal import run_refusal
    from runner import Bench
    from s3_case import ENGINE_KEY
    from servers import ALL_SERVERS, LaunchOptions

    suite = cases.QUICK_CASES if args.quick else cases.FULL_CASES
    if args.list:
        for case in suite:
            print(f"{case.key:20} {case.kind:10} {case.title}")
        return 0
    selected = cases.select(suite, args.cases)
    runs = args.runs or (3 if args.quick else 5)
    if runs < 1:
        raise SystemExit("bench: --runs must be at least 1")
    if args.uploadsrv_workers is not None and args.uploadsrv_workers < 1:
        raise SystemExit("bench: --uploadsrv-workers must be at least 1")
    try:
        pins = pinning.make_pinning(args.server_cpus, args.client_cpus, args.engine_cpus)
    except ValueError as problem:
        raise SystemExit(f"bench: {problem}") from None
    # From here on every client this process starts (and its prober thread) inherits it.
    pinning.pin_this_process(pins)
    options = LaunchOptions(pins, args.uploadsrv_workers)

    if not args.quick:
        size = min(WARM_MEMORY, _available_memory() // 2)
        print(f"bench: touching {size / 2**30:.0f} GiB of memory once (fresh VM pages are "
              "slow on first use)", file=sys.stderr, flush=True)
        print(f"bench: took {machine.warm_memory(size):.1f} s", file=sys.stderr, flush=True)

    root = Path(tempfile.mkdtemp(prefix="uploadsrv-bench-"))
    scratch = root / "responses"
    scratch.mkdir()
    bench = Bench(root, environment.CACHE_DIR, scratch, options)
    started = time.monotonic()
    results = []
    try:
        bench.start_all(ALL_SERVERS)
        for case in selected:
            if case.kind == "refusal":
                results.append(run_refusal(bench, case, runs))
            else:
                results.append(bench.run_case(case, runs))
    finally:
        bench.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    plural = "s" if runs != 1 else ""
    settings = (f"{'Quick' if args.quick else 'Full'} run: {runs} run{plural} per server and case, "
                f"server order reversed every other round, {minutes:.1f} min in all. "
                "MB/s = 10^6 bytes of file payload per second of the client's time "
                "(curl time_total; tus: from the creation POST to the last PATCH's answer).")
    workers = (f"uploadsrv's config sets server.workers = {args.uploadsrv_workers}"
               if args.uploadsrv_workers is not None
               else "uploadsrv's config leaves server.workers out (its default)")
    processes = ", ".join(f"{report.SERVER_LABELS[key]} {count}"
                          for key, count in bench.processes_seen.items())
    observed = pinning.observed_line(pins, bench.cpus_seen, report.SERVER_LABELS, frozenset({ENGINE_KEY}))
    header = [machine.describe(), settings,
              f"{pins.describe()} {observed}".strip(),
              f"{workers}; most processes seen per server: {processes or '-'}."]
    text = report.render(results, header)
    print()
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    # Every run's raw figures beside the report, for looking closer at an outlier.
    raw = args.out.with_suffix(".json")
    raw.write_text(json.dumps([dataclasses.asdict(result) for result in results], indent=1))
    print(f"\nbench: report written to {args.out} (each run's figures: {raw.name})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
