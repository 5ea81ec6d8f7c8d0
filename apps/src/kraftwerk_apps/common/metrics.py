"""Prometheus metrics: HTTP middleware and the ``/metrics`` endpoint.

With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable
directory (the Ansible role does this) so that ``/metrics`` aggregates all workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

HTTP_REQUESTS = Counter(
    "kraftwerk_http_requests_total",
    "HTTP requests handled",
    ["app", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "kraftwerk_http_request_duration_seconds",
    "HTTP request latency (until response start for streaming responses)",
    ["app", "method", "route"],
)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return router


def instrument(app: FastAPI, app_name: str) -> None:
    """Count requests and measure latency per route template (not per raw path)."""

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(app_name, request.method, template, str(status)).inc()
            HTTP_LATENCY.labels(app_name, request.method, template).observe(
                time.perf_counter() - start
            )
