"""Consumer FastAPI application (``create_app`` is the uvicorn factory).

Background tasks started in the lifespan:

* ``GroupWorker`` - the at-least-once group consumer (see ``processing.py``) with DLQ;
* ``HistoryReader`` - a group-less reader keeping the topic's latest N messages, so that
  every instance shows the same list (see ``history.py``);
* a stats loop reading the group's committed offsets and the end offsets (lag);
* ``ClusterView`` - the admin client (partitions, committed offsets, readiness).

All of them connect with back-off, so the HTTP side is up (``/healthz``) even while Kafka
is not (``/readyz`` answers 503 with a reason).  They run under a ``TaskSupervisor``
(``common/lifecycle.py``): if one of them stops unexpectedly ``/readyz`` answers 503
``fatal: <reason>`` and the process exits non-zero shortly after (systemd restarts it).

Ready (``/readyz`` 200) means: no fatal failure, Kafka answers and the topic exists, the
history reader is assigned to the topic's partitions, and the group member has *joined* the
group (partitions assigned; not during a rebalance).

``GET /cluster-health`` (the page's "Cluster health" section) asks Prometheus
(``KRAFTWERK_PROMETHEUS_URL``), see ``cluster_health.py``; it has no part in readiness.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from kraftwerk_apps import __version__
from kraftwerk_apps.common.health import health_router
from kraftwerk_apps.common.kafka import missing_codecs
from kraftwerk_apps.common.lifecycle import TaskSupervisor
from kraftwerk_apps.common.metrics import instrument, metrics_router
from kraftwerk_apps.consumer.cluster import ClusterView
from kraftwerk_apps.consumer.cluster_health import ClusterHealth
from kraftwerk_apps.consumer.dashboard import Dashboard
from kraftwerk_apps.consumer.dlq import DlqWriter
from kraftwerk_apps.consumer.events import Broadcaster, event_stream
from kraftwerk_apps.consumer.page import render_page
from kraftwerk_apps.consumer.processing import GroupWorker
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # NGINX: do not buffer this response
    "Connection": "keep-alive",
}


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a record's text may hold lone surrogates (``\\ud800``),
    which are valid JSON escapes but cannot be encoded as UTF-8."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str
        ).encode("ascii")


def create_app(settings: ConsumerSettings | None = None) -> FastAPI:
    settings = settings or ConsumerSettings()
    cluster = ClusterView(settings)
    dlq = DlqWriter(settings)
    worker = GroupWorker(settings, dlq)
    dashboard = Dashboard(settings, cluster, worker, Broadcaster())
    supervisor = TaskSupervisor(exit_delay=settings.fatal_exit_delay_seconds)
    health = ClusterHealth(
        settings.prometheus_url,
        settings.prometheus_timeout_seconds,
        settings.cluster_health_cache_seconds,
    )

    async def readiness() -> str | None:
        reason = supervisor.readiness()
        if reason is None:
            reason = await cluster.readiness()
        if reason is None and not dashboard.history.ready:
            reason = "history reader not assigned to the topic yet"
        if reason is None:
            reason = worker.readiness()
        return reason

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        missing = missing_codecs()
        if missing:
            raise RuntimeError(
                f"aiokafka cannot decompress {', '.join(missing)} (install cramjam: "
                "aiokafka[lz4,snappy,zstd]); refusing to start"
            )
        supervisor.start("cluster", cluster.run(), may_return=True)
        supervisor.start("group-worker", worker.run())
        supervisor.start("history-reader", dashboard.history.run())
        supervisor.start("stats", dashboard.run_stats())
        try:
            yield
        finally:
            await supervisor.stop()
            await worker.stop()
            await dlq.stop()
            await dashboard.history.stop()
            await cluster.stop()
            await health.aclose()

    app = FastAPI(
        title="kraftwerk consumer",
        version=__version__,
        description=__doc__,
        lifespan=lifespan,
    )
    instrument(app, "consumer")
    app.include_router(health_router(readiness))
    app.include_router(metrics_router())

    @app.get("/", response_class=HTMLResponse, summary="Live page of the latest messages")
    async def index(request: Request) -> HTMLResponse:
        base = str(request.scope.get("root_path", ""))
        return HTMLResponse(render_page(dashboard.snapshot(), base))

    @app.get(
        "/messages",
        summary="Latest messages, partition offsets and lag (JSON)",
        response_class=SafeJSONResponse,
    )
    async def messages() -> SafeJSONResponse:
        return SafeJSONResponse(dashboard.snapshot())

    @app.get(
        "/events",
        summary="Server-sent events: `snapshot` events with the /messages payload",
        response_class=StreamingResponse,
    )
    async def events() -> StreamingResponse:
        stream = event_stream(
            dashboard.broadcaster, dashboard.snapshot_event, settings.sse_keepalive_seconds
        )
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get(
        "/cluster-health",
        summary="Cluster health from Prometheus for the page (JSON; 200 also when Prometheus "
        "is not configured or not reachable: see state and error)",
        response_class=SafeJSONResponse,
    )
    async def cluster_health() -> SafeJSONResponse:
        return SafeJSONResponse(await health.get(), headers={"Cache-Control": "no-store"})

    return app
