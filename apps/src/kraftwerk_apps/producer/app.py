"""Producer FastAPI application (``create_app`` is the uvicorn factory).

Contract
--------
* ``POST /send``: body = any JSON object -> one Kafka record (value = compact UTF-8 JSON).
  Record key from ``?key=`` (default: the ``Idempotency-Key``); Kafka record headers from
  HTTP headers ``X-Kafka-Header-<name>`` (name lower-cased, value UTF-8).
* ``POST /send/batch``: ``{"messages": [{"value": {...}, "key": "k", "headers": {...},
  "idempotency_key": "i"}]}``; always answers per-message results.
* 200 only after the broker acknowledged (``acks=all``, idempotent producer); 503 (with
  ``Retry-After``) only when a message was certainly not written; 504 ``outcome_unknown``
  when that is not known: retry with the same ``Idempotency-Key``.
* Auth: ``X-API-Key``; 401 missing, 403 wrong.  413 too large, 422 invalid input.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kraftwerk_apps import __version__
from kraftwerk_apps.common.health import health_router
from kraftwerk_apps.common.lifecycle import TaskSupervisor
from kraftwerk_apps.common.metrics import instrument, metrics_router
from kraftwerk_apps.producer.deps import ProducerContext
from kraftwerk_apps.producer.errors import install_error_handlers
from kraftwerk_apps.producer.gateway import KafkaSender, MessageSender
from kraftwerk_apps.producer.idempotency import ReplayCache
from kraftwerk_apps.producer.openapi import ProducerAPI
from kraftwerk_apps.producer.routes import DirectRoutes
from kraftwerk_apps.producer.routes import router as messages_router
from kraftwerk_apps.producer.service import Publisher
from kraftwerk_apps.producer.settings import ProducerSettings

log = logging.getLogger(__name__)


def create_app(
    settings: ProducerSettings | None = None, sender: MessageSender | None = None
) -> FastAPI:
    settings = settings or ProducerSettings()
    supervisor = TaskSupervisor(exit_delay=settings.fatal_exit_delay_seconds)
    kafka: MessageSender = sender or KafkaSender(settings, supervisor)
    if not settings.api_keys:
        log.warning("KRAFTWERK_API_KEYS is empty: every /send request will be rejected (403)")

    async def readiness() -> str | None:
        return supervisor.readiness() or await kafka.readiness()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await kafka.start()
        try:
            yield
        finally:
            await supervisor.stop()
            await kafka.stop()

    app = ProducerAPI(
        title="kraftwerk producer", version=__version__, description=__doc__, lifespan=lifespan
    )
    cache = ReplayCache(settings.idempotency_window_seconds, settings.idempotency_max_keys)
    app.state.producer = ProducerContext(
        settings=settings,
        publisher=Publisher(kafka, cache, settings.request_deadline_seconds),
        api_keys=settings.api_key_bytes(),
    )
    install_error_handlers(app)
    app.add_middleware(DirectRoutes, routes=messages_router.routes)
    instrument(app, "producer")  # added last: the outer one, it sees every request
    app.include_router(health_router(readiness))
    app.include_router(metrics_router())
    app.include_router(messages_router)
    return app
