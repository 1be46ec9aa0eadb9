"""The statistics behind every table: one row's runs reduced to the figures shown.

Owns the median MB/s (with min and max), CPU seconds per GiB, worst peak-RSS growth,
pooled /health percentiles, and the counts of failures, matching sha256s and leftover
temp files. Pure: records in, numbers out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from cases import GiB, MiB
from records import CaseResult, RunRecord


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; max for fraction 1."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class RowStats:
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


def row_stats(records: list[RunRecord]) -> RowStats | None:
    if not records:
        return None
    good = [r for r in records if r.ok]
    speeds = [r.mbps for r in good] or [0.0]
    latencies = [value for r in records for value in r.latencies_ms]
    return RowStats(
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


def case_stats(result: CaseResult) -> dict[str, RowStats]:
    """Each row's figures, by row key; rows that never ran are absent."""
    stats = {}
    for key in result.servers:
        found = row_stats([r for r in result.runs if r.row == key])
        if found is not None:
            stats[key] = found
    return stats


def ratio(subject: RowStats | None, other: RowStats | None) -> float | None:
    """subject's median MB/s over other's, or None when either has none."""
    if subject is None or other is None or subject.mbps <= 0 or other.mbps <= 0:
        return None
    return subject.mbps / other.mbps
