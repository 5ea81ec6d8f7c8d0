"""Run a service with uvicorn using host/port/workers from settings."""

from __future__ import annotations

import uvicorn

from kraftwerk_apps.common.logging import configure_logging, logging_config
from kraftwerk_apps.common.settings import KafkaClientSettings


def serve(factory_path: str, settings: KafkaClientSettings) -> None:
    """Serve ``factory_path`` (an app factory, ``module:function``) with uvicorn.

    A factory import string (not an app object) is used so that ``workers > 1`` works:
    every worker process builds its own app, settings and Kafka clients.
    """
    configure_logging(settings.log_level)
    uvicorn.run(
        factory_path,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
        root_path=settings.root_path,
        proxy_headers=settings.proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_seconds),
        server_header=False,
    )
