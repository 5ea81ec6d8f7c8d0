"""``/healthz`` (process alive) and ``/readyz`` (ready to serve) endpoints.

What "ready" means is the service's readiness check; both services fail it with
``fatal: <reason>`` once a background task died (see ``lifecycle.TaskSupervisor``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

# Returns None when ready, otherwise a human-readable reason.
ReadinessCheck = Callable[[], Awaitable[str | None]]


class HealthStatus(BaseModel):
    status: str
    reason: str | None = None


def health_router(check: ReadinessCheck) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="Liveness: the process is up", response_model=HealthStatus)
    async def healthz() -> HealthStatus:
        return HealthStatus(status="ok")

    @router.get(
        "/readyz",
        summary="Readiness: Kafka is reachable and the service's background work is running",
        response_model=HealthStatus,
        responses={503: {"model": HealthStatus, "description": "Not ready; `reason` says why"}},
    )
    async def readyz() -> JSONResponse:
        reason = await check()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    return router
