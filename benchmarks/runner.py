"""Running the cases: one measured upload at a time, rows in alternating order.

Owns the measured run (reset the RSS high-water mark, read CPU, start the /health
prober, upload, read CPU and peak RSS, check every stored file's SHA-256 against the
source and against the server's own record, delete it, sync the disk) and the loop of
rounds around it. A row is a server uploaded one way (cases.Row): the tus case has
uploadsrv twice, one-shot and tus, interleaved like any two servers. The 2-core machine
is shared with the clients, so only one row is ever uploading; the order is reversed
every other round so that drift (page cache, disk writeback, thermal) falls on all rows
alike. Also records the CPUs every server thread was allowed on (pinning.tree_cpus).
Produces records; report.py turns them into tables. The early refusal case has its own
loop in refusal.py, the S3 case in s3_case.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import client
import sources
from cases import GiB, MiB, WARMUP_SIZE, Case, Row, rows_for
from measure import HealthProber, PeakRss, cpu_seconds, process_tree, rss_bytes
from pinning import tree_cpus
from records import CaseResult, RunRecord
from servers import (LaunchOptions, RunningServer, ServerSpec, ServerUnavailable, UPLOADSRV,
                     start)

SLOWEST_EXPECTED = 20e6  # bytes/s; sets each upload's time limit
MARGIN = GiB  # free space kept beyond what a case writes, plus uploadsrv's min_free_space


def upload_time_limit(total_bytes: int) -> float:
    return 60 + total_bytes / SLOWEST_EXPECTED


class Bench:
    """The running servers, their idle memory, and the cache of source files."""

    def __init__(self, root: Path, cache: Path, scratch: Path,
                 options: LaunchOptions = LaunchOptions()) -> None:
        self.root = root
        self.cache = cache
        self.scratch = scratch  # curl response bodies
        self.options = options
        self.servers: dict[str, RunningServer] = {}
        self.unavailable: dict[str, str] = {}
        self.idle_rss: dict[str, int] = {}
        self.peak: dict[str, PeakRss] = {}
        self.cpus_seen: dict[str, frozenset[int]] = {}  # server key -> CPUs its threads had
        self.processes_seen: dict[str, int] = {}  # server key -> most processes in its tree

    def start_all(self, specs: tuple[ServerSpec, ...]) -> None:
        warmup = sources.media_source(self.cache, WARMUP_SIZE)
        for spec in specs:
            try:
                server = start(spec, self.root, self.options)
            except ServerUnavailable as problem:
                self.unavailable[spec.key] = f"not available: {problem}"
                print(f"bench: {spec.label} not available: {problem}", flush=True)
                continue
            self.servers[spec.key] = server
            self.peak[spec.key] = PeakRss(server.pid)
            # Idle RSS is taken after one warm-up upload, so that lazily imported code
            # and first-use buffers count as idle, not as growth caused by an upload.
            result = self.upload(server, warmup, expect_100=False)
            server.clear()
            if not 200 <= result.status < 300:
                print(f"bench: warm-up upload to {spec.label} answered {result.status} "
                      f"{result.body or result.error}", flush=True)
            time.sleep(0.5)
            pids = process_tree(server.pid)
            self.idle_rss[spec.key] = rss_bytes(pids)
            self._note_cpus(spec.key, pids)
            print(f"bench: {spec.label} up on port {server.port}, {len(pids)} process(es), "
                  f"idle RSS {self.idle_rss[spec.key] / MiB:.1f} MiB "
                  f"({self.peak[spec.key].method})", flush=True)

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()

    def note_server(self, key: str, pids: list[int]) -> None:
        """Record the CPUs and process count of a server started outside start_all
        (the S3 case's engine and uploadsrv); report.SERVER_LABELS must name `key`."""
        self._note_cpus(key, pids)

    def _note_cpus(self, key: str, pids: list[int]) -> None:
        self.cpus_seen[key] = self.cpus_seen.get(key, frozenset()) | tree_cpus(pids)
        self.processes_seen[key] = max(self.processes_seen.get(key, 0), len(pids))

    def upload(self, server: RunningServer, source: sources.SourceFile, expect_100: bool,
               tag: str = "0") -> client.UploadResult:
        response = self.scratch / f"{server.spec.key}-{tag}.json"
        return client.upload_once(server.url("/upload"), source.path, server.spec.body,
                                  response, expect_100=expect_100,
                                  max_seconds=upload_time_limit(source.size))

    # --- one measured run -------------------------------------------------------------

    def _start_uploads(self, case: Case, row: Row, server: RunningServer,
                       source: sources.SourceFile, tus_path: str | None,
                       limit: float) -> list[client.CurlUpload | client.TusUpload]:
        if row.tus:
            assert tus_path is not None
            return [client.TusUpload(server.port, tus_path, source.path, row.patch_size_in(case),
                                     limit).start()]
        count = case.count if case.kind == "concurrent" else 1
        uploads = [client.CurlUpload(server.url("/upload"), source.path, server.spec.body,
                                     self.scratch / f"{row.key}-{index}.json",
                                     expect_100=False, max_seconds=limit)
                   for index in range(count)]
        return [upload.start() for upload in uploads]

    def measured_run(self, case: Case, row: Row, round_number: int,
                     source: sources.SourceFile, tus_path: str | None = None) -> RunRecord:
        server = self.servers[row.server]
        count = case.count if case.kind == "concurrent" else 1
        record = RunRecord(row.key, round_number, source.size * count)
        if server.process.poll() is not None:
            record.error = f"server exited with status {server.process.returncode}"
            return record
        limit = upload_time_limit(source.size * count)
        peak = self.peak[row.server]
        peak.reset()
        pids = process_tree(server.pid)
        cpu_before = cpu_seconds(pids)
        with HealthProber(server.port, max_seconds=limit + 10) as prober:
            started = time.perf_counter()
            uploads = self._start_uploads(case, row, server, source, tus_path, limit)
            results = [upload.wait() for upload in uploads]
            # One upload: the client's own time (curl's time_total, or the tus client's
            # creation-to-last-PATCH). Several: wall time from the first start to the
            # last answer, i.e. aggregate throughput.
            record.seconds = (results[0].seconds if count == 1
                              else time.perf_counter() - started)
        record.cpu_seconds = cpu_seconds(pids) - cpu_before
        record.rss_growth = peak.peak() - self.idle_rss[row.server]
        self._note_cpus(row.server, process_tree(server.pid))
        record.latencies_ms = prober.result.latencies_ms
        record.probe_failures = prober.result.failures
        failed = [r for r in results if not (200 <= r.status < 300) or r.error]
        if failed:
            first = failed[0]
            record.error = f"{len(failed)} of {len(results)} failed: status {first.status} " \
                           f"{first.error or first.body}"
        record.integrity_ok, problem = self._check_stored(server, source, count, results,
                                                          need_record=row.tus)
        if problem and not record.error:
            record.error = problem
        record.leftovers = len(server.leftovers())
        server.clear()
        # Flush whatever writeback this run started, so it is not charged to the next.
        os.sync()
        return record

    def _check_stored(self, server: RunningServer, source: sources.SourceFile, count: int,
                      results: list[client.UploadResult],
                      need_record: bool) -> tuple[bool, str]:
        """Every stored file against the source, and every record the server gave back.

        `need_record`: the client fetched the server's file record (tus: GET
        /files/<id>/info), so a missing sha256 there is a failure, not a peer without one.
        """
        stored = server.stored_files()
        if len(stored) != count:
            return False, f"{len(stored)} stored files, expected {count}"
        for path in stored:
            if path.stat().st_size != source.size or sources.sha256_of(path) != source.sha256:
                return False, f"stored file {path.name} differs from the source"
        for result in results:
            body = result.body or {}
            claimed = body.get("sha256")
            if claimed is None and need_record:
                return False, "the server's file record has no sha256"
            if claimed is not None and claimed != source.sha256:
                return False, "the server's reported sha256 differs from the source"
            if need_record and body.get("size") != source.size:
                return False, f"the server's file record says size {body.get('size')}"
        return True, ""

    # --- cases --------------------------------------------------------------------------

    def disk_problem(self, case: Case, servers: list[str]) -> str:
        """Why the disk cannot hold this case, or "" when it can."""
        kind = "random" if case.kind == "refusal" else "media"
        # A FastAPI upload exists twice at once (spool file and destination).
        copies = 2 if "fastapi_default" in servers and case.kind != "refusal" else 1
        needed = (sources.bytes_needed(self.cache, case.size, kind)
                  + case.size * case.count * copies + MARGIN + GiB)
        free = sources.free_bytes(self.root)
        if free < needed:
            return (f"skipped: needs {needed / GiB:.1f} GiB free on the disk, "
                    f"{free / GiB:.1f} GiB available")
        return ""

    def prepare_source(self, case: Case, result: CaseResult, disk_problem: str) -> sources.SourceFile | None:
        """The case's source file, synced to disk; None (the case skipped) on a disk problem."""
        result.skipped = disk_problem
        if disk_problem:
            print(f"bench: {case.title}: {disk_problem}", flush=True)
            return None
        print(f"bench: {case.title}: preparing the source file", flush=True)
        source = sources.media_source(self.cache, case.size)
        # A source just written is still dirty in the page cache; flush it now rather
        # than during the first measured run.
        os.sync()
        return source

    def run_case(self, case: Case, runs: int) -> CaseResult:
        """A single, concurrent or tus case: `runs` rounds over its rows (the S3 case
        has a loop of its own, s3_case.py)."""
        if case.kind == "s3":
            from s3_case import run_s3  # it imports this module

            return run_s3(self, case, runs)
        rows = rows_for(case)
        result = CaseResult(case, [row.key for row in rows])
        result.unavailable = {row.key: self.unavailable[row.server] for row in rows
                              if row.server in self.unavailable}
        source = self.prepare_source(case, result, self.disk_problem(case, [row.server for row in rows]))
        if source is None:
            return result
        tus_path = None
        if any(row.tus for row in rows) and UPLOADSRV.key in self.servers:
            tus_path = client.tus_creation_path(self.servers[UPLOADSRV.key].port)
        for row in rows:
            if row.tus and row.key not in result.unavailable and tus_path is None:
                result.unavailable[row.key] = (
                    "not available: OPTIONS /files answers no Tus-Version (tus not landed)")
        active = [row for row in rows if row.key not in result.unavailable]
        for round_number in range(runs):
            order = active if round_number % 2 == 0 else active[::-1]
            for row in order:
                record = self.measured_run(case, row, round_number, source, tus_path)
                result.runs.append(record)
                status = "ok" if record.ok else f"FAILED: {record.error}"
                print(f"bench: {case.key} round {round_number + 1}/{runs} {row.key}: "
                      f"{record.mbps:.0f} MB/s {status}", flush=True)
        return result

    def unavailable_among(self, keys: list[str]) -> dict[str, str]:
        return {key: self.unavailable[key] for key in keys if key in self.unavailable}
