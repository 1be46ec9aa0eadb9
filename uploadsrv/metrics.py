"""Prometheus metrics: what is counted, and `GET /metrics` in the text format.

Counters and histograms live in a `CollectorRegistry` of the app's own (no module-level
state); `handlers/metrics.py` serves them. With several worker processes the supervisor sets `PROMETHEUS_MULTIPROC_DIR`
before starting them; prometheus-client then keeps every value in files there, and a
scrape answered by any worker sums the whole server (`MultiProcessCollector`). Figures
that are a state rather than a count (free space, unfinished uploads) are read from
storage at scrape time.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SIZE_BUCKETS = tuple(float(1 << shift) for shift in range(20, 34, 2))  # 1 MiB .. 8 GiB
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric uploadsrv keeps; one per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.started = Counter("uploadsrv_uploads_started", "Uploads started (one-shot: per file; tus: per creation)",
                               ["kind"], registry=registry)
        self.completed = Counter("uploadsrv_uploads_completed", "Uploads committed as files", ["kind"],
                                 registry=registry)
        self.failed = Counter("uploadsrv_uploads_failed", "Upload requests refused or failed, by error code",
                              ["kind", "code"], registry=registry)
        self.received = Counter("uploadsrv_received_bytes", "Request body bytes received by upload routes",
                                ["kind"], registry=registry)
        self.in_flight = Gauge("uploadsrv_upload_requests_in_flight", "Upload requests in progress", ["kind"],
                               registry=registry, multiprocess_mode="livesum")
        self.duration = Histogram("uploadsrv_upload_duration_seconds",
                                  "From the start of an upload to its commit", ["kind"],
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.size = Histogram("uploadsrv_upload_size_bytes", "Sizes of committed files", ["kind"],
                              buckets=SIZE_BUCKETS, registry=registry)
        self.cleanup_runs = Counter("uploadsrv_cleanup_runs", "Cleanup passes run", registry=registry)
        self.cleanup_bytes = Counter("uploadsrv_cleanup_reclaimed_bytes", "Bytes removed by cleanup",
                                     registry=registry)
        self.hooks_failed = Counter("uploadsrv_hook_failures", "Completion hook attempts that failed",
                                    ["hook"], registry=registry)
        self.hooks_delivered = Counter("uploadsrv_hook_deliveries", "Completion hook deliveries made",
                                       ["hook"], registry=registry)

    def file_committed(self, kind: str, size: int, seconds: float) -> None:
        self.completed.labels(kind).inc()
        self.size.labels(kind).observe(size)
        self.duration.labels(kind).observe(max(0.0, seconds))

    def hook_attempt(self, hook: str, delivered: bool) -> None:
        (self.hooks_delivered if delivered else self.hooks_failed).labels(hook).inc()

    def cleanup_pass(self, removed: list[tuple[str, int]]) -> None:
        self.cleanup_runs.inc()
        self.cleanup_bytes.inc(sum(size for _, size in removed))
