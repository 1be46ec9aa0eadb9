"""The S3 case (`s3-1G`, quick `s3-64M`): uploadsrv on its S3 backend beside boto3.

Owns the case's loop: starting the engine (seaweed_engine.py: `weed mini`) and an
uploadsrv with `storage.backend = "s3"` on it (its defaults, but a 64 MiB spool), then
rounds over three rows, one upload at a time, order reversed every other round:

- "boto3 upload_file": s3_client.py, a process of its own, puts the source into the
  same bucket (prefix boto3/): the engine's own ceiling on this machine, in this run.
  Its CPU and memory columns are that client process's, since it does the work that
  uploadsrv does for the other rows; it has no /health of its own, but the prober runs
  during its uploads too (against the idle uploadsrv), as a load like the other rows'.
- "uploadsrv one-shot (S3)": curl -F to /upload, as in the single cases.
- "uploadsrv tus (S3)": tus_client.py, PATCHes of the case's patch size.

uploadsrv's rows are measured like every other server's (runner.py): its CPU, its peak
RSS over idle, /health probed every 10 ms. After each run, untimed, the object the upload
left in S3 is read back and hashed against the source, uploadsrv's record is checked,
leftovers (spool files, `uploads/` objects, unfinished multipart uploads) are counted, and
everything under the row's prefix is deleted. SeaweedFS's own CPU per row goes in a note.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import client
import sources
from cases import (BOTO3, S3_PART_SIZE, S3_SPOOL_BUDGET, UPLOADSRV_S3, GiB, MiB, WARMUP_SIZE, Case, Row,
                   rows_for)
from measure import HealthProber, PeakRss, cpu_seconds, process_tree, rss_bytes
from pinning import format_cpus
from records import CaseResult, RunRecord
from runner import Bench, upload_time_limit
from seaweed_engine import Engine, EngineUnavailable, start_engine
from servers import RunningServer, ServerUnavailable, start_uploadsrv_s3

S3_CLIENT = Path(__file__).resolve().parent / "s3_client.py"
PREFIXES = {BOTO3: "boto3/", UPLOADSRV_S3: "uploadsrv/"}
ENGINE_KEY = "seaweedfs"  # in Bench.cpus_seen / processes_seen


def run_s3(bench: Bench, case: Case, runs: int) -> CaseResult:
    rows = rows_for(case)
    result = CaseResult(case, [row.key for row in rows])
    source = bench.prepare_source(case, result, _disk_problem(bench, case, runs, len(rows)))
    if source is None:
        return result
    try:
        engine = start_engine(bench.root / ENGINE_KEY, bench.options.pinning)
    except EngineUnavailable as problem:
        print(f"bench: SeaweedFS not available: {problem}", flush=True)
        result.unavailable = {row.key: f"not available: SeaweedFS: {problem}" for row in rows}
        return result
    bench.note_server(ENGINE_KEY, process_tree(engine.pid))
    server: RunningServer | None = None
    try:
        s3 = engine.client()
        try:
            server = _start_uploadsrv(bench, engine, s3)
        except ServerUnavailable as problem:
            print(f"bench: uploadsrv (S3) not available: {problem}", flush=True)
            for row in rows:
                if row.server == UPLOADSRV_S3:
                    result.unavailable[row.key] = f"not available: {problem}"
        tus_path = client.tus_creation_path(server.port) if server is not None else None
        for row in rows:
            if row.tus and row.key not in result.unavailable and tus_path is None:
                result.unavailable[row.key] = "not available: OPTIONS /files answers no Tus-Version"
        active = [row for row in rows if row.key not in result.unavailable]
        engine_cpu: dict[str, list[float]] = {}
        for round_number in range(runs):
            for row in (active if round_number % 2 == 0 else active[::-1]):
                before = cpu_seconds(process_tree(engine.pid))
                record = (_boto3_run(engine, s3, server, row, round_number, source) if row.server == BOTO3
                          else _uploadsrv_run(bench, engine, s3, server, case, row, round_number, source, tus_path))
                engine_cpu.setdefault(row.label, []).append(
                    (cpu_seconds(process_tree(engine.pid)) - before) / (source.size / GiB))
                bench.note_server(ENGINE_KEY, process_tree(engine.pid))
                result.runs.append(record)
                status = "ok" if record.ok else f"FAILED: {record.error}"
                print(f"bench: {case.key} round {round_number + 1}/{runs} {row.key}: "
                      f"{record.mbps:.0f} MB/s {status}", flush=True)
        result.notes += _notes(engine, engine_cpu, bench.options.pinning.engine_cpus)
    finally:
        if server is not None:
            server.stop()
        engine.stop()
        shutil.rmtree(engine.folder, ignore_errors=True)
    return result


def _disk_problem(bench: Bench, case: Case, runs: int, rows: int) -> str:
    # SeaweedFS marks deleted objects and reclaims their space only when it vacuums a
    # volume, so every run's upload may stay on the disk until the case ends.
    needed = sources.bytes_needed(bench.cache, case.size) + case.size * runs * rows + 2 * GiB
    free = sources.free_bytes(bench.root)
    if free < needed:
        return f"skipped: needs {needed / GiB:.1f} GiB free on the disk, {free / GiB:.1f} GiB available"
    return ""


def _start_uploadsrv(bench: Bench, engine: Engine, s3: Any) -> RunningServer:
    storage = (f'endpoint = "{engine.endpoint}"\nregion = "{engine.region}"\nbucket = "{engine.bucket}"\n'
               f'prefix = "{PREFIXES[UPLOADSRV_S3]}"\npart_size = "{S3_PART_SIZE // MiB}MiB"\n'
               f'spool_budget = "{S3_SPOOL_BUDGET // MiB}MiB"\n')
    server = start_uploadsrv_s3(bench.root, bench.options, storage, engine.credentials_env())
    bench.peak[UPLOADSRV_S3] = PeakRss(server.pid)
    # Idle RSS after one warm-up upload, as for every server (runner.Bench.start_all).
    warmup = bench.upload(server, sources.media_source(bench.cache, WARMUP_SIZE), expect_100=False)
    if not 200 <= warmup.status < 300:
        print(f"bench: warm-up upload to uploadsrv (S3) answered {warmup.status} "
              f"{warmup.body or warmup.error}", flush=True)
    _clear(s3, engine, PREFIXES[UPLOADSRV_S3], server)
    time.sleep(0.5)
    pids = process_tree(server.pid)
    bench.idle_rss[UPLOADSRV_S3] = rss_bytes(pids)
    bench.note_server(UPLOADSRV_S3, pids)
    print(f"bench: uploadsrv (S3) up on port {server.port} against {engine.endpoint}, {len(pids)} "
          f"process(es), idle RSS {bench.idle_rss[UPLOADSRV_S3] / MiB:.1f} MiB", flush=True)
    return server


def _boto3_run(engine: Engine, s3: Any, server: RunningServer | None, row: Row, round_number: int,
               source: sources.SourceFile) -> RunRecord:
    record = RunRecord(row.key, round_number, source.size)
    limit = upload_time_limit(source.size)
    prefix = PREFIXES[BOTO3]
    command = [sys.executable, str(S3_CLIENT), "--endpoint", engine.endpoint, "--bucket", engine.bucket,
               "--key", f"{prefix}{round_number}", "--source", str(source.path), "--max-seconds", f"{limit:.0f}"]
    # The prober (and the idle uploadsrv answering it) share the client CPUs in uploadsrv's
    # rows; they run here too, so every row's uploader has the same company. Its figures
    # are uploadsrv's idle ones, not this row's: they are not kept.
    try:
        with contextlib.ExitStack() as company:
            if server is not None and server.process.poll() is None:
                company.enter_context(HealthProber(server.port, max_seconds=limit + 10))
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit + 20,
                                  env=engine.credentials_env())
        found = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, ValueError) as problem:
        record.error = f"boto3 client failed: {problem!r}"[:200]
        _clear(s3, engine, prefix)
        return record
    record.seconds, record.cpu_seconds = float(found["seconds"]), float(found["cpu_seconds"])
    record.rss_growth = int(found["rss_growth"])
    record.error = found["error"]
    record.integrity_ok, mismatch = _check_object(s3, engine, prefix, source, None)
    record.error = record.error or mismatch
    record.leftovers = len(_multiparts(s3, engine, prefix))
    _clear(s3, engine, prefix)
    return record


def _uploadsrv_run(bench: Bench, engine: Engine, s3: Any, server: RunningServer | None, case: Case, row: Row,
                   round_number: int, source: sources.SourceFile, tus_path: str | None) -> RunRecord:
    assert server is not None
    record = RunRecord(row.key, round_number, source.size)
    if server.process.poll() is not None:
        record.error = f"server exited with status {server.process.returncode}"
        return record
    limit = upload_time_limit(source.size)
    peak = bench.peak[UPLOADSRV_S3]
    peak.reset()
    pids = process_tree(server.pid)
    cpu_before = cpu_seconds(pids)
    with HealthProber(server.port, max_seconds=limit + 10) as prober:
        if row.tus:
            assert tus_path is not None
            upload: client.CurlUpload | client.TusUpload = client.TusUpload(
                server.port, tus_path, source.path, row.patch_size_in(case), limit)
        else:
            upload = client.CurlUpload(server.url("/upload"), source.path, server.spec.body,
                                       bench.scratch / f"{row.key}.json", expect_100=False, max_seconds=limit)
        outcome = upload.start().wait()
    record.seconds = outcome.seconds
    record.cpu_seconds = cpu_seconds(pids) - cpu_before
    record.rss_growth = peak.peak() - bench.idle_rss[UPLOADSRV_S3]
    bench.note_server(UPLOADSRV_S3, process_tree(server.pid))
    record.latencies_ms = prober.result.latencies_ms
    record.probe_failures = prober.result.failures
    if not 200 <= outcome.status < 300 or outcome.error:
        record.error = f"status {outcome.status} {outcome.error or outcome.body}"[:300]
    prefix = PREFIXES[UPLOADSRV_S3]
    record.integrity_ok, problem = _check_object(s3, engine, prefix, source, outcome.body or {})
    record.error = record.error or problem
    record.leftovers = (len(server.leftovers()) + len(_multiparts(s3, engine, prefix))
                        + len(_keys(s3, engine, f"{prefix}uploads/")))
    _clear(s3, engine, prefix, server)
    return record


def _check_object(s3: Any, engine: Engine, prefix: str, source: sources.SourceFile,
                  record: dict | None) -> tuple[bool, str]:
    """The one object of the source's size under `prefix` is the source; and uploadsrv's
    record (when given) names its size and SHA-256."""
    if record is not None:
        if record.get("sha256") != source.sha256:
            return False, "uploadsrv's record has another sha256 than the source"
        if record.get("size") != source.size:
            return False, f"uploadsrv's record says size {record.get('size')}"
    sized = [key for key, size in _keys(s3, engine, prefix).items() if size == source.size]
    if len(sized) != 1:
        return False, f"{len(sized)} objects of the source's size under {prefix}"
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=engine.bucket, Key=sized[0])["Body"]
    for chunk in body.iter_chunks(MiB):
        digest.update(chunk)
    if digest.hexdigest() != source.sha256:
        return False, f"the object {sized[0]} differs from the source"
    return True, ""


def _keys(s3: Any, engine: Engine, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=engine.bucket, Prefix=prefix):
        found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return found


def _multiparts(s3: Any, engine: Engine, prefix: str) -> list[tuple[str, str]]:
    answer = s3.list_multipart_uploads(Bucket=engine.bucket, Prefix=prefix)
    return [(item["Key"], item["UploadId"]) for item in answer.get("Uploads", [])]


def _clear(s3: Any, engine: Engine, prefix: str, server: RunningServer | None = None) -> None:
    """Delete every object and unfinished multipart upload under `prefix`, and the spool."""
    for key, upload_id in _multiparts(s3, engine, prefix):
        s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)
    keys = list(_keys(s3, engine, prefix))
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=engine.bucket, Delete={"Objects": [{"Key": key} for key in keys[start:start + 1000]]})
    if server is not None:
        server.clear()
    os.sync()


def _notes(engine: Engine, engine_cpu: dict[str, list[float]], engine_cpus: frozenset[int] | None) -> list[str]:
    spent = ", ".join(f"{label} {statistics.median(values):.2f}" for label, values in engine_cpu.items())
    where = ("the server CPUs" if engine_cpus is None
             else f"CPUs {format_cpus(engine_cpus)} of its own (--engine-cpus)")
    return [f"Engine: SeaweedFS `weed mini` on loopback ({engine.endpoint}), data on the same disk, "
            f"started by the benchmark on {where}. uploadsrv: storage.backend = \"s3\", part_size "
            f"{S3_PART_SIZE // MiB} MiB, spool_budget {S3_SPOOL_BUDGET // MiB} MiB, file locks.",
            "boto3 upload_file: default TransferConfig (8 MiB parts, 10 threads), run as its own process on "
            "the client CPUs; its CPU s/GiB and RSS columns are that process's, and it has no /health "
            "column, but the 10 ms /health prober (against the idle uploadsrv) runs during its uploads "
            "as during uploadsrv's, so the client CPUs carry the same load in every row.",
            f"SeaweedFS's own CPU s/GiB, median per row: {spent or '-'}."]
