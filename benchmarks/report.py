"""Turning run records into the markdown report.

Owns the per-case tables (with the "x raw" and "x raw+fsync" ratio columns: each row's
median MB/s over aiohttp raw's and aiohttp raw + fsync's in the same case of the same
run), the refusal table, and the order of the report: header, Targets (report_targets.py),
then one table per case. The figures come from stats.py. Pure: no I/O but the strings
it returns.
"""

from __future__ import annotations

import statistics

from cases import BOTO3, MiB, ONE_SHOT_ROWS, RAW, RAW_FSYNC, UPLOADSRV, rows_for
from records import CaseResult, RefusalRecord
from report_targets import refusal_met, table, targets_table
from stats import RowStats, case_stats, ratio

# Every server key that runs; the S3 case starts its engine and uploadsrv (S3) itself.
SERVER_LABELS = {**{row.key: row.label for row in ONE_SHOT_ROWS},
                 "uploadsrv_s3": "uploadsrv (S3)", "seaweedfs": "SeaweedFS"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio_cell(subject: RowStats, other: RowStats | None) -> str:
    found = ratio(subject, other)
    return "-" if found is None else f"{found:.2f}x"


def _row_cells(found: RowStats, raw: RowStats | None, raw_fsync: RowStats | None) -> list[str]:
    health = f"{_ms(found.p50)} / {_ms(found.p99)} / {_ms(found.latency_max)}"
    if found.probe_failures:
        health += f" ({found.probe_failures} failed)"
    integrity = f"{found.integrity_ok}/{found.runs}"
    if found.failed:
        integrity += f"; {found.failed} failed: {found.first_error[:80]}"
    if found.leftovers:
        integrity += f"; {found.leftovers} temp files left"
    return [f"{found.mbps:.0f} ({found.mbps_min:.0f}-{found.mbps_max:.0f})",
            _ratio_cell(found, raw), _ratio_cell(found, raw_fsync),
            f"{found.cpu_per_gib:.2f}", f"{found.rss_growth_mib:.1f}",
            health, str(found.probes), integrity]


def case_table(result: CaseResult) -> list[str]:
    case = result.case
    lines = [f"### {case.title}", ""]
    if result.skipped:
        return lines + [f"_{result.skipped}_", ""]
    stats = case_stats(result)
    header = ["server", "MB/s median (min-max)", "x raw", "x raw+fsync", "CPU s/GiB",
              "peak RSS - idle, MiB", "/health p50 / p99 / max, ms", "probes", "sha256 ok"]
    # The S3 case has one ceiling, boto3 upload_file to the same engine: one ratio column.
    s3 = case.kind == "s3"
    if s3:
        header[2:4] = ["x boto3"]
    blank = [""] * (len(header) - 2)
    rows = []
    for row in rows_for(case):
        if row.key in result.unavailable:
            rows.append([row.label, result.unavailable[row.key], *blank])
        elif row.key not in stats:
            rows.append([row.label, "not run", *blank])
        else:
            cells = _row_cells(stats[row.key], stats.get(BOTO3 if s3 else RAW), stats.get(RAW_FSYNC))
            if s3:
                del cells[2]
            rows.append([row.label, *cells])
    return lines + table(header, rows) + _notes(result.notes)


def _notes(notes: list[str]) -> list[str]:
    return ([""] + [f"_{note}_  " for note in notes] if notes else []) + [""]


def _refusal_status(record: RefusalRecord) -> str:
    if record.status == 0:
        # No HTTP response reached curl: say what curl saw instead.
        return f"none ({record.error[:60]})" if record.error else "none"
    return f"{record.status} {record.code}".strip()


def refusal_table(result: CaseResult) -> list[str]:
    case = result.case
    lines = [f"### {case.title}", ""]
    if result.skipped:
        return lines + [f"_{result.skipped}_", ""]
    groups: dict[tuple[str, str, bool], list[RefusalRecord]] = {}
    for record in result.refusals:
        groups.setdefault((record.server, record.check, record.expect_100), []).append(record)
    rows = [[SERVER_LABELS[key], result.unavailable[key]] + [""] * 7
            for key in result.servers if key in result.unavailable]
    for (key, check, expect_100), records in groups.items():
        statuses = sorted({_refusal_status(r) for r in records})
        seconds = [r.seconds for r in records]
        sent = max(r.bytes_sent for r in records)
        met = all(refusal_met(r) for r in records)
        rows.append([SERVER_LABELS[key], check, "sent" if expect_100 else "disabled",
                     ", ".join(statuses),
                     f"{statistics.median(seconds) * 1000:.1f} / {max(seconds) * 1000:.1f}",
                     f"{sent / MiB:.2f}", "yes" if all(r.stored_nothing for r in records) else "NO",
                     *(("response <= 50 ms, sent < 1 MiB", "yes" if met else "no")
                       if key == UPLOADSRV else ("-", "-"))])
    header = ["server", "refused for", "Expect: 100-continue", "status", "ms median / max",
              "client sent, MiB (max)", "stored nothing", "target", "met?"]
    notes = [*result.notes,
             "client sent: curl's size_upload, the body bytes curl handed to the kernel. "
             "On loopback they cross at once into the server's socket receive buffer, "
             "which the kernel grows to several MiB, whether or not the server reads "
             "them. ms: curl's time_total, to the response (or to the failure)."]
    return lines + table(header, rows) + _notes(notes)


def render(results: list[CaseResult], header_lines: list[str]) -> str:
    """The whole report: a title, the header lines (machine, settings, pinning), tables."""
    lines = ["# uploadsrv benchmark", ""]
    for line in header_lines:
        lines += [line, ""]
    lines += targets_table(results)
    for result in results:
        lines += refusal_table(result) if result.case.kind == "refusal" else case_table(result)
    return "\n".join(lines).rstrip() + "\n"
