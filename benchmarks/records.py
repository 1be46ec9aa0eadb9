"""What one benchmark run leaves behind: plain records, no behaviour.

Owns the shapes shared by runner.py and refusal.py (which fill them) and report.py
(which reads them); kept apart so none of those imports another for a type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cases import Case


@dataclass
class RunRecord:
    """One measured upload (or group of concurrent uploads) of one row of a case."""
    row: str  # cases.Row.key: a server, or "uploadsrv_tus" for uploadsrv's tus upload
    round: int
    payload_bytes: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_growth: int = 0  # peak RSS during the upload minus idle RSS
    latencies_ms: list[float] = field(default_factory=list)
    probe_failures: int = 0
    integrity_ok: bool = False
    error: str = ""
    leftovers: int = 0

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def mbps(self) -> float:
        return self.payload_bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass
class RefusalRecord:
    """One body sent to be refused, and what came back."""
    server: str
    check: str  # "wrong type" or "over-size Content-Length"
    expect_100: bool
    status: int
    code: str
    seconds: float
    bytes_sent: int
    stored_nothing: bool
    error: str = ""


@dataclass
class CaseResult:
    """Everything one case produced, ready for report.py."""
    case: Case
    servers: list[str]  # the row keys (cases.Row.key), in table order
    runs: list[RunRecord] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)
    skipped: str = ""  # why the whole case did not run
    unavailable: dict[str, str] = field(default_factory=dict)  # row key -> why
    notes: list[str] = field(default_factory=list)
