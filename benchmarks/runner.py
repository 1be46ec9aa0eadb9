"""Running the cases: one measured upload at a time, servers in alternating order.

Owns the measured run (reset the RSS high-water mark, read CPU, start the /health
prober, upload, read CPU and peak RSS, check every stored file's SHA-256 against the
source, delete it, sync the disk) and the loop of rounds around it. The 2-core machine
is shared with curl, so only one server is ever uploading; the order of the servers is
reversed every other round so that drift (page cache, disk writeback, thermal) falls on
all of them alike. Produces records; report.py turns them into tables. The early
refusal case has its own loop in refusal.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import client
import sources
from cases import GiB, MiB, WARMUP_SIZE, Case
from measure import HealthProber, PeakRss, cpu_seconds, process_tree, rss_bytes
from records import CaseResult, RunRecord
from servers import (AIOHTTP_RAW, ALL_SERVERS, UPLOADSRV, RunningServer, ServerSpec,
                     ServerUnavailable, start)

SLOWEST_EXPECTED = 20e6  # bytes/s; sets each upload's time limit
MARGIN = GiB  # free space kept beyond what a case writes, plus uploadsrv's min_free_space


def upload_time_limit(total_bytes: int) -> float:
    return 60 + total_bytes / SLOWEST_EXPECTED


class Bench:
    """The running servers, their idle memory, and the cache of source files."""

    def __init__(self, root: Path, cache: Path, scratch: Path) -> None:
        self.root = root
        self.cache = cache
        self.scratch = scratch  # curl response bodies
        self.servers: dict[str, RunningServer] = {}
        self.unavailable: dict[str, str] = {}
        self.idle_rss: dict[str, int] = {}
        self.peak: dict[str, PeakRss] = {}

    def start_all(self, specs: tuple[ServerSpec, ...]) -> None:
        warmup = sources.media_source(self.cache, WARMUP_SIZE)
        for spec in specs:
            try:
                server = start(spec, self.root)
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
            self.idle_rss[spec.key] = rss_bytes(process_tree(server.pid))
            print(f"bench: {spec.label} up on port {server.port}, idle RSS "
                  f"{self.idle_rss[spec.key] / MiB:.1f} MiB ({self.peak[spec.key].method})",
                  flush=True)

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()

    def upload(self, server: RunningServer, source: sources.SourceFile, expect_100: bool,
                tag: str = "0") -> client.UploadResult:
        response = self.scratch / f"{server.spec.key}-{tag}.json"
        return client.upload_once(server.url("/upload"), source.path, server.spec.body,
                                  response, expect_100=expect_100,
                                  max_seconds=upload_time_limit(source.size))

    # --- one measured run -------------------------------------------------------------

    def measured_run(self, case: Case, key: str, round_number: int,
                     source: sources.SourceFile, tus_path: str | None = None) -> RunRecord:
        server = self.servers[key]
        count = case.count if case.kind == "concurrent" else 1
        record = RunRecord(key, round_number, source.size * count)
        if server.process.poll() is not None:
            record.error = f"server exited with status {server.process.returncode}"
            return record
        limit = upload_time_limit(source.size * count)
        peak = self.peak[key]
        peak.reset()
        pids = process_tree(server.pid)
        cpu_before = cpu_seconds(pids)
        with HealthProber(server.port, max_seconds=limit + 10) as prober:
            if tus_path is not None:
                results = [client.tus_upload(server.port, tus_path, source.path,
                                             case.patch_size, limit)]
                record.seconds = results[0].seconds
            else:
                started = time.perf_counter()
                uploads = [client.CurlUpload(server.url("/upload"), source.path,
                                             server.spec.body,
                                             self.scratch / f"{key}-{index}.json",
                                             expect_100=False, max_seconds=limit)
                           for index in range(count)]
                for upload in uploads:
                    upload.start()
                results = [upload.wait() for upload in uploads]
                # One upload: curl's own time_total. Several: wall time from the first
                # start to the last answer, i.e. aggregate throughput.
                record.seconds = (results[0].seconds if count == 1
                                  else time.perf_counter() - started)
        record.cpu_seconds = cpu_seconds(pids) - cpu_before
        record.rss_growth = peak.peak() - self.idle_rss[key]
        record.latencies_ms = prober.result.latencies_ms
        record.probe_failures = prober.result.failures
        failed = [r for r in results if not (200 <= r.status < 300) or r.error]
        if failed:
            first = failed[0]
            record.error = f"{len(failed)} of {len(results)} failed: status {first.status} " \
                           f"{first.error or first.body}"
        record.integrity_ok, problem = self._check_stored(server, source, count, results)
        if problem and not record.error:
            record.error = problem
        record.leftovers = len(server.leftovers())
        server.clear()
        # Flush whatever writeback this run started, so it is not charged to the next.
        os.sync()
        return record

    def _check_stored(self, server: RunningServer, source: sources.SourceFile, count: int,
                      results: list[client.UploadResult]) -> tuple[bool, str]:
        stored = server.stored_files()
        if len(stored) != count:
            return False, f"{len(stored)} stored files, expected {count}"
        for path in stored:
            if path.stat().st_size != source.size or sources.sha256_of(path) != source.sha256:
                return False, f"stored file {path.name} differs from the source"
        for result in results:
            claimed = (result.body or {}).get("sha256")
            if claimed is not None and claimed != source.sha256:
                return False, "the server's reported sha256 differs from the source"
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

    def run_case(self, case: Case, runs: int) -> CaseResult:
        """A single, concurrent or tus case: `runs` rounds over its servers."""
        if case.kind == "tus":
            wanted = [AIOHTTP_RAW.key, UPLOADSRV.key]
        else:
            wanted = [spec.key for spec in ALL_SERVERS]
        result = CaseResult(case, wanted, unavailable=self.unavailable_among(wanted))
        result.skipped = self.disk_problem(case, wanted)
        if result.skipped:
            print(f"bench: {case.title}: {result.skipped}", flush=True)
            return result
        print(f"bench: {case.title}: preparing the source file", flush=True)
        source = sources.media_source(self.cache, case.size)
        # A source just written is still dirty in the page cache; flush it now rather
        # than during the first measured run.
        os.sync()
        tus_path = None
        if case.kind == "tus" and UPLOADSRV.key in self.servers:
            tus_path = client.tus_creation_path(self.servers[UPLOADSRV.key].port)
            if tus_path is None:
                result.unavailable[UPLOADSRV.key] = (
                    "not available: OPTIONS /files answers no Tus-Version (tus not landed)")
        active = [key for key in wanted if key not in result.unavailable]
        for round_number in range(runs):
            order = active if round_number % 2 == 0 else active[::-1]
            for key in order:
                use_tus = tus_path if (case.kind == "tus" and key == UPLOADSRV.key) else None
                record = self.measured_run(case, key, round_number, source, use_tus)
                result.runs.append(record)
                status = "ok" if record.ok else f"FAILED: {record.error}"
                print(f"bench: {case.key} round {round_number + 1}/{runs} {key}: "
                      f"{record.mbps:.0f} MB/s {status}", flush=True)
        return result

    def unavailable_among(self, keys: list[str]) -> dict[str, str]:
        return {key: self.unavailable[key] for key in keys if key in self.unavailable}
