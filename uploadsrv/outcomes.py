"""What follows an upload's start, its commit or its refusal: the metrics, the completion
hooks and the one log line per outcome. Called from the upload session (start, commit)
and from the upload routes' guard (refusals); never waits.
"""

from __future__ import annotations

import logging

from .metrics import Metrics
from .storage import UploadInfo
from .uploads.hooks import CompletionHooks
from .uploads.session import Committed

log = logging.getLogger("uploadsrv.uploads")


class Outcomes:
    def __init__(self, metrics: Metrics, hooks: CompletionHooks) -> None:
        self._metrics = metrics
        self._hooks = hooks

    def started(self, info: UploadInfo) -> None:
        self._metrics.started.labels(info.kind).inc()

    def committed(self, committed: Committed) -> None:
        record = committed.record
        self._metrics.file_committed(committed.kind, record.size, committed.seconds)
        self._hooks.file_committed(record)
        rate = record.size / committed.seconds / 1e6 if committed.seconds > 0 else 0.0
        log.info("upload stored: id=%s kind=%s type=%s size=%d sha256=%s seconds=%.2f MB/s=%.0f",
                 record.id, committed.kind, record.type, record.size, record.sha256, committed.seconds, rate,
                 extra={"upload_id": record.id})

    def refused(self, kind: str, code: str, status: int, upload_id: str | None = None) -> None:
        self._metrics.failed.labels(kind, code).inc()
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "upload refused: kind=%s code=%s status=%d%s", kind, code, status,
                f" id={upload_id}" if upload_id else "", extra={"upload_id": upload_id})

    def request_started(self, kind: str) -> None:
        self._metrics.in_flight.labels(kind).inc()

    def request_ended(self, kind: str, received: int) -> None:
        self._metrics.in_flight.labels(kind).dec()
        if received:
            self._metrics.received.labels(kind).inc(received)
