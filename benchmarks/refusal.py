"""The early-refusal case: how fast a server says no to a body it will not take.

Owns sending a large body that must be refused (random bytes: wrong type; a valid MP3
over a second uploadsrv's max_file_size: over-size Content-Length), with curl's own
`Expect: 100-continue` and without it, and recording the status, curl's time_total and
size_upload, and that nothing was stored. Only uploadsrv is held to the targets; the
seed pattern (the one peer with a type check) is measured for comparison.
"""

from __future__ import annotations

import os

import sources
from cases import MiB, REFUSAL_LIMIT, REFUSAL_LIMIT_BYTES, Case
from records import CaseResult, RefusalRecord
from runner import Bench
from servers import SEED_PATTERN, UPLOADSRV, RunningServer, ServerUnavailable, start_uploadsrv


def run_refusal(bench: Bench, case: Case, runs: int) -> CaseResult:
    """Refusals of a body by wrong type and by over-size Content-Length, Expect both ways."""
    keys = [SEED_PATTERN.key, UPLOADSRV.key]
    result = CaseResult(case, keys, unavailable=bench.unavailable_among(keys))
    result.skipped = bench.disk_problem(case, [])
    if result.skipped:
        print(f"bench: {case.title}: {result.skipped}", flush=True)
        return result
    print(f"bench: {case.title}: preparing the source files", flush=True)
    wrong = sources.wrong_type_source(bench.cache, case.size)
    media = sources.media_source(bench.cache, case.size)
    os.sync()  # flush the new sources before the first timed run
    plan: list[tuple[RunningServer, str, sources.SourceFile]] = []
    for key in (SEED_PATTERN.key, UPLOADSRV.key):
        if key in bench.servers:
            plan.append((bench.servers[key], "wrong type", wrong))
    small: RunningServer | None = None
    if UPLOADSRV.key in bench.servers:
        try:
            small = start_uploadsrv(bench.root, bench.options, max_file_size=REFUSAL_LIMIT,
                                    name="uploadsrv-small-limit")
            plan.append((small, "over-size Content-Length", media))
            result.notes.append(f"over-size: a second uploadsrv with max_file_size = "
                                f"{REFUSAL_LIMIT} receives the {case.size // MiB} MiB body")
        except ServerUnavailable as problem:
            result.notes.append(f"over-size not measured: {problem}")
    if REFUSAL_LIMIT_BYTES >= case.size:
        result.notes.append("over-size limit is not below the body size")
    try:
        for round_number in range(runs):
            order = plan if round_number % 2 == 0 else plan[::-1]
            for server, check, source in order:
                for expect_100 in (True, False):
                    result.refusals.append(
                        refusal_run(bench, server, check, source, expect_100))
    finally:
        if small is not None:
            small.stop()
    return result


def refusal_run(bench: Bench, server: RunningServer, check: str,
                source: sources.SourceFile, expect_100: bool) -> RefusalRecord:
    """One refusal attempt; the stored folder is checked for leftovers, then cleared."""
    outcome = bench.upload(server, source, expect_100=expect_100, tag="refusal")
    error = (outcome.body or {}).get("error")
    code = error.get("code", "") if isinstance(error, dict) else ""
    stored_nothing = not server.stored_files()
    server.clear()
    os.sync()
    record = RefusalRecord(server.spec.key, check, expect_100, outcome.status, code,
                           outcome.seconds, outcome.bytes_sent, stored_nothing,
                           outcome.error)
    print(f"bench: refusal {server.spec.key} {check} expect={expect_100}: "
          f"{record.status} {code} {record.seconds * 1000:.1f} ms "
          f"sent {record.bytes_sent / MiB:.2f} MiB {record.error}", flush=True)
    return record
