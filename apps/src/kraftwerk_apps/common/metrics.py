"""Prometheus metrics: HTTP middleware and the ``/metrics`` endpoint.

With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable
directory (the Ansible role does this) so that ``/metrics`` aggregates all workers.
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
MAX_CACHED_LABELS = 1000


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


class ObserveRequests:
    """Pure ASGI middleware: count requests and measure latency per route template.

    Not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` costs a task, memory
    streams and a wrapped response per request, which was the largest single cost of a
    ``/healthz`` or ``/send`` request.  The latency is taken when the response starts (for
    streaming responses such as SSE too).
    """

    def __init__(self, app: ASGIApp, app_name: str) -> None:
        self.app = app
        self.app_name = app_name
        # (method, route template, status) -> the label children (labels() takes a lock).
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        key = (scope["method"], getattr(route, "path", "unmatched"), status)
        children = self._children.get(key)
        if children is None:
            method, template, _ = key
            children = (
                HTTP_REQUESTS.labels(self.app_name, method, template, str(status)),
                HTTP_LATENCY.labels(self.app_name, method, template),
            )
            if len(self._children) < MAX_CACHED_LABELS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        async def observe_start(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                self._observe(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, receive, observe_start)
        finally:
            if not observed:  # raised before answering: the server answers 500
                self._observe(scope, 500, started)


def instrument(app: FastAPI, app_name: str) -> None:
    """Count requests and measure latency per route template (not per raw path)."""
    app.add_middleware(ObserveRequests, app_name=app_name)
