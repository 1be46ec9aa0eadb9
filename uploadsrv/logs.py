"""Logging: one line per request (the access log) and the format of every line.

Lines go to standard output (journald keeps them under systemd), as text or as one JSON
object per line (`logging.format`), at `logging.level`. No line carries a token (the
Authorization header is never logged) or a client's control characters (paths and
names are escaped). A request whose client went away before the answer is logged with
status 499, as nginx does (`http_protocol` answers it so), not as a 500 of ours.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .config import LoggingConfig


def escape(text: str, limit: int = 300) -> str:
    """Printable text only: control and format characters become \\x.. escapes."""
    cleaned = "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the extra fields."""

    FIELDS = ("method", "path", "status", "bytes_in", "bytes_out", "seconds", "upload_id", "client")

    def __init__(self, *, with_pid: bool = False) -> None:
        super().__init__()
        self._with_pid = with_pid

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._with_pid:
            entry["pid"] = record.process
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With workers, every line says which process wrote it (the journal sees one stream).
TEXT_FORMAT_WITH_PID = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure(config: LoggingConfig, *, with_pid: bool = False) -> None:
    """Route every logger to stdout in the configured format and level."""
    handler = logging.StreamHandler(sys.stdout)
    if config.format == "json":
        handler.setFormatter(JsonFormatter(with_pid=with_pid))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT_WITH_PID if with_pid else TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())


class AccessLogger(AbstractAccessLogger):
    """`method path status bytes-in bytes-out seconds upload-id client` for every request."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        status = response.status
        match_info = getattr(request, "match_info", None)  # a bare BaseRequest (refused before routing) has none
        upload_id = match_info.get("file_id") if match_info else None
        if upload_id is None:
            location = response.headers.get("Location", "")
            upload_id = location.rsplit("/", 1)[-1] if "/files/" in location else None
        fields = {
            "method": escape(request.method, 20),
            "path": escape(request.path),
            "status": status,
            "bytes_in": request.content.total_bytes,
            "bytes_out": response.body_length,
            "seconds": round(time, 4),
            "upload_id": escape(upload_id, 64) if upload_id else None,
            "client": request.remote or "-",
        }
        self.logger.info("%s %s %d in=%d out=%d %.3fs id=%s %s", fields["method"], fields["path"], status,
                         fields["bytes_in"], fields["bytes_out"], time, fields["upload_id"] or "-",
                         fields["client"], extra=fields)
