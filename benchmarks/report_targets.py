"""The Targets table of the report: each target's measured value and whether it is met.

Owns holding a case's subject row (uploadsrv, or uploadsrv's tus upload) to the targets
of cases.TARGETS (same-run ratios to another row, peak RSS growth, /health latency,
integrity) and the early-refusal targets. A target counts as met only if every run of
the subject row succeeded. Pure: no I/O but the strings it returns.
"""

from __future__ import annotations

from cases import REFUSAL_BYTES, REFUSAL_SECONDS, UPLOADSRV, MiB, Target, rows_for, targets_for
from records import CaseResult, RefusalRecord
from stats import RowStats, case_stats, ratio


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; a "|" inside a cell (a server's log lines) is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                    for row in rows]


def refusal_met(record: RefusalRecord) -> bool:
    return (record.status in (413, 415) and record.seconds <= REFUSAL_SECONDS
            and record.bytes_sent < REFUSAL_BYTES and record.stored_nothing)


def measure_target(target: Target, stats: dict[str, RowStats]) -> tuple[str, bool] | None:
    """The measured value as shown, and whether it meets the target; None: not measured."""
    subject = stats.get(target.subject)
    if subject is None:
        return None
    problems = f" ({subject.failed} failed runs)" if subject.failed else ""
    healthy = not subject.failed
    if target.what == "ratio":
        found = ratio(subject, stats.get(target.versus))
        if found is None:
            return None
        return f"{found:.2f}x{problems}", healthy and found >= target.limit
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
    if result.skipped or UPLOADSRV in result.unavailable:
        reason = result.skipped or result.unavailable[UPLOADSRV]
        return [[key, "uploadsrv", "early refusal: response <= 50 ms, client sent < 1 MiB",
                 reason, "-"]]
    groups: dict[tuple[str, bool], list[RefusalRecord]] = {}
    for record in result.refusals:
        if record.server == UPLOADSRV:
            groups.setdefault((record.check, record.expect_100), []).append(record)
    rows = []
    for (check, expect_100), records in groups.items():
        worst_ms = max(r.seconds for r in records) * 1000
        sent = max(r.bytes_sent for r in records) / MiB
        label = f"{check}, Expect {'sent' if expect_100 else 'disabled'}: <= 50 ms, < 1 MiB"
        rows.append([key, "uploadsrv", label, f"{worst_ms:.1f} ms, {sent:.2f} MiB",
                     "yes" if all(refusal_met(r) for r in records) else "no"])
    return rows


def targets_table(results: list[CaseResult]) -> list[str]:
    rows = []
    for result in results:
        if result.case.kind == "refusal":
            rows += _refusal_target_rows(result)
            continue
        labels = {row.key: row.label for row in rows_for(result.case)}
        stats = {} if result.skipped else case_stats(result)
        for target in targets_for(result.case):
            measured = measure_target(target, stats)
            if result.skipped:
                cells = ["skipped", "-"]
            elif measured is None:
                reason = (result.unavailable.get(target.subject)
                          or result.unavailable.get(target.versus) or "not measured")
                cells = [reason, "-"]
            else:
                cells = [measured[0], "yes" if measured[1] else "no"]
            rows.append([result.case.key, labels.get(target.subject, target.subject),
                         target.label, *cells])
    if not rows:
        return []
    header = ["case", "row", "target", "measured", "met?"]
    return ["### Targets", ""] + table(header, rows) + [""]
