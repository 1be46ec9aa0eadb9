"""`GET /metrics`: the whole server's figures in Prometheus text format.

In one process it renders the app's own registry; with several worker processes
(`PROMETHEUS_MULTIPROC_DIR` set) it sums every process's files. Figures that are a state
(free space, unfinished uploads) and the process metrics are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..appkeys import CONFIG, METRICS, STORAGE
from ..auth import require_token
from ..metrics import multiprocess_dir


class _StateCollector(Collector):
    """Values read at scrape time."""

    def __init__(self, free: int, unfinished: int) -> None:
        self._free, self._unfinished = free, unfinished

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("uploadsrv_storage_free_bytes", "Free space where uploads are stored",
                                value=self._free)
        yield GaugeMetricFamily("uploadsrv_uploads_unfinished",
                                "Uploads in storage not yet complete (resumable uploads waiting for bytes)",
                                value=self._unfinished)


async def metrics_page(request: web.Request) -> web.Response:
    """`GET /metrics`: the whole server's figures in Prometheus text format.

    When tokens are configured it needs one of `auth.tokens` or `metrics.token` (a token
    for the scraper that cannot upload)."""
    config = request.app[CONFIG]
    require_token(request, config.auth.tokens + ((config.metrics.token,) if config.metrics.token else ()))
    storage = request.app[STORAGE]
    uploads = await storage.list_uploads()
    state = _StateCollector(await storage.free_space(), sum(1 for entry in uploads if entry.has_info))
    directory = multiprocess_dir()
    if directory is None:
        scrape = request.app[METRICS].registry
        extra = CollectorRegistry()
        extra.register(state)
        extra.register(ProcessCollector(registry=None))
        body = generate_latest(scrape) + generate_latest(extra)
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        registry.register(state)
        registry.register(ProcessCollector(registry=None))
        body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
