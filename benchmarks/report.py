"""Turning run records into the markdown report.

Owns the statistics (median MB/s, ratio to aiohttp raw in the same run, CPU seconds per
GiB, worst peak-RSS growth, pooled /health percentiles), the per-case tables, the
refusal table and the targets table with its "met?" column. Pure: no I/O but the
strings it returns.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from cases import GiB, MiB, REFUSAL_BYTES, REFUSAL_SECONDS, Target, targets_for
from records import CaseResult, RefusalRecord, RunRecord
from servers import ALL_SERVERS

LABELS = {spec.key: spec.label for spec in ALL_SERVERS}
RAW = "aiohttp_raw"
SUBJECT = "uploadsrv"  # the server the targets are about


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; max for fraction 1."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class ServerStats:
    runs: int
    failed: int
    mbps: float
    mbps_min: float
    mbps_max: float
    cpu_per_gib: float
    rss_growth_mib: float
    p50: float | None
    p99: float | None
    latency_max: float | None
    probes: int
    probe_failures: int
    integrity_ok: int
    leftovers: int
    first_error: str


def server_stats(records: list[RunRecord]) -> ServerStats | None:
    if not records:
        return None
    good = [r for r in records if r.ok]
    speeds = [r.mbps for r in good] or [0.0]
    latencies = [value for r in records for value in r.latencies_ms]
    return ServerStats(
        runs=len(records),
        failed=len(records) - len(good),
        mbps=statistics.median(speeds),
        mbps_min=min(speeds),
        mbps_max=max(speeds),
        cpu_per_gib=statistics.median([r.cpu_seconds / (r.payload_bytes / GiB) for r in good])
        if good else 0.0,
        rss_growth_mib=max(r.rss_growth for r in records) / MiB,
        p50=percentile(latencies, 0.50) if latencies else None,
        p99=percentile(latencies, 0.99) if latencies else None,
        latency_max=max(latencies) if latencies else None,
        probes=len(latencies),
        probe_failures=sum(r.probe_failures for r in records),
        integrity_ok=sum(1 for r in records if r.integrity_ok),
        leftovers=max(r.leftovers for r in records),
        first_error=next((r.error for r in records if r.error), ""),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def case_stats(result: CaseResult) -> dict[str, ServerStats]:
    stats = {}
    for key in result.servers:
        found = server_stats([r for r in result.runs if r.server == key])
        if found is not None:
            stats[key] = found
    return stats


def case_table(result: CaseResult) -> list[str]:
    case = result.case
    lines = [f"### {case.title}", ""]
    if result.skipped:
        return lines + [f"_{result.skipped}_", ""]
    stats = case_stats(result)
    raw = stats.get(RAW)
    rows = []
    for key in result.servers:
        label = LABELS[key] + (" (tus)" if case.kind == "tus" and key == SUBJECT else "")
        if key in result.unavailable:
            rows.append([label, result.unavailable[key]] + [""] * 6)
            continue
        found = stats.get(key)
        if found is None:
            rows.append([label, "not run"] + [""] * 6)
            continue
        ratio = (f"{found.mbps / raw.mbps:.2f}x" if raw and raw.mbps > 0 and found.mbps > 0
                 else "-")
        health = f"{_ms(found.p50)} / {_ms(found.p99)} / {_ms(found.latency_max)}"
        if found.probe_failures:
            health += f" ({found.probe_failures} failed)"
        integrity = f"{found.integrity_ok}/{found.runs}"
        if found.failed:
            integrity += f"; {found.failed} failed: {found.first_error[:80]}"
        if found.leftovers:
            integrity += f"; {found.leftovers} temp files left"
        rows.append([label, f"{found.mbps:.0f} ({found.mbps_min:.0f}-{found.mbps_max:.0f})",
                     ratio, f"{found.cpu_per_gib:.2f}", f"{found.rss_growth_mib:.1f}",
                     health, str(found.probes), integrity])
    header = ["server", "MB/s median (min-max)", "x raw", "CPU s/GiB", "peak RSS - idle, MiB",
              "/health p50 / p99 / max, ms", "probes", "sha256 ok"]
    lines += _table(header, rows)
    return lines + _notes(result.notes)


def _notes(notes: list[str]) -> list[str]:
    return ([""] + [f"_{note}_  " for note in notes] if notes else []) + [""]


def _refusal_status(record: RefusalRecord) -> str:
    if record.status == 0:
        # No HTTP response reached curl: say what curl saw instead.
        return f"none ({record.error[:60]})" if record.error else "none"
    return f"{record.status} {record.code}".strip()


def _refusal_met(record: RefusalRecord) -> bool:
    return (record.status in (413, 415) and record.seconds <= REFUSAL_SECONDS
            and record.bytes_sent < REFUSAL_BYTES and record.stored_nothing)


def refusal_table(result: CaseResult) -> list[str]:
    case = result.case
    lines = [f"### {case.title}", ""]
    if result.skipped:
        return lines + [f"_{result.skipped}_", ""]
    groups: dict[tuple[str, str, bool], list[RefusalRecord]] = {}
    for record in result.refusals:
        groups.setdefault((record.server, record.check, record.expect_100), []).append(record)
    rows = [[LABELS[key], result.unavailable[key]] + [""] * 7
            for key in result.servers if key in result.unavailable]
    for (key, check, expect_100), records in groups.items():
        statuses = sorted({_refusal_status(r) for r in records})
        seconds = [r.seconds for r in records]
        sent = max(r.bytes_sent for r in records)
        met = all(_refusal_met(r) for r in records)
        rows.append([LABELS[key], check, "sent" if expect_100 else "disabled",
                     ", ".join(statuses),
                     f"{statistics.median(seconds) * 1000:.1f} / {max(seconds) * 1000:.1f}",
                     f"{sent / MiB:.2f}", "yes" if all(r.stored_nothing for r in records) else "NO",
                     *(("response <= 50 ms, sent < 1 MiB", "yes" if met else "no")
                       if key == SUBJECT else ("-", "-"))])
    header = ["server", "refused for", "Expect: 100-continue", "status", "ms median / max",
              "client sent, MiB (max)", "stored nothing", "target", "met?"]
    lines += _table(header, rows)
    notes = [*result.notes,
             "client sent: curl's size_upload, the body bytes curl handed to the kernel. "
             "On loopback they cross at once into the server's socket receive buffer, "
             "which the kernel grows to several MiB, whether or not the server reads "
             "them. ms: curl's time_total, to the response (or to the failure)."]
    return lines + _notes(notes)


def _measure_target(target: Target, stats: dict[str, ServerStats]) -> tuple[str, bool] | None:
    subject = stats.get(SUBJECT)
    if subject is None:
        return None
    problems = f" ({subject.failed} failed runs)" if subject.failed else ""
    healthy = not subject.failed
    if target.what == "ratio":
        other = stats.get(target.versus)
        if other is None or other.mbps <= 0 or subject.mbps <= 0:
            return None
        ratio = subject.mbps / other.mbps
        return f"{ratio:.2f}x{problems}", healthy and ratio >= target.limit
    if target.what == "rss":
        return (f"{subject.rss_growth_mib:.1f} MiB{problems}",
                healthy and subject.rss_growth_mib <= target.limit)
    if target.what in ("p99", "max"):
        value = subject.p99 if target.what == "p99" else subject.latency_max
        if value is None:
            return None
        failures = f", {subject.probe_failures} probes failed" if subject.probe_failures else ""
        return (f"{value:.1f} ms{failures}{problems}",
                healthy and value <= target.limit and not subject.probe_failures)
    if target.what == "integrity":
        return (f"{subject.integrity_ok}/{subject.runs}",
                subject.integrity_ok == subject.runs)
    raise ValueError(target.what)


def _refusal_target_rows(result: CaseResult) -> list[list[str]]:
    key = result.case.key
    if result.skipped or SUBJECT in result.unavailable:
        reason = result.skipped or result.unavailable[SUBJECT]
        return [[key, "early refusal: response <= 50 ms, client sent < 1 MiB", reason, "-"]]
    groups: dict[tuple[str, bool], list[RefusalRecord]] = {}
    for record in result.refusals:
        if record.server == SUBJECT:
            groups.setdefault((record.check, record.expect_100), []).append(record)
    rows = []
    for (check, expect_100), records in groups.items():
        worst_ms = max(r.seconds for r in records) * 1000
        sent = max(r.bytes_sent for r in records) / MiB
        label = f"{check}, Expect {'sent' if expect_100 else 'disabled'}: <= 50 ms, < 1 MiB"
        rows.append([key, label, f"{worst_ms:.1f} ms, {sent:.2f} MiB",
                     "yes" if all(_refusal_met(r) for r in records) else "no"])
    return rows


def targets_table(results: list[CaseResult]) -> list[str]:
    rows = []
    for result in results:
        if result.case.kind == "refusal":
            rows += _refusal_target_rows(result)
            continue
        stats = {} if result.skipped else case_stats(result)
        for target in targets_for(result.case):
            measured = _measure_target(target, stats)
            if result.skipped:
                cells = ["skipped", "-"]
            elif measured is None:
                reason = result.unavailable.get(SUBJECT, "not measured")
                cells = [reason, "-"]
            else:
                cells = [measured[0], "yes" if measured[1] else "no"]
            rows.append([result.case.key, target.label, *cells])
    if not rows:
        return []
    header = ["case", "target (uploadsrv)", "measured", "met?"]
    return ["### Targets", ""] + _table(header, rows) + [""]


def render(results: list[CaseResult], machine: str, settings: str) -> str:
    lines = ["# uploadsrv benchmark", "", machine, "", settings, ""]
    lines += targets_table(results)
    for result in results:
        lines += refusal_table(result) if result.case.kind == "refusal" else case_table(result)
    return "\n".join(lines).rstrip() + "\n"
