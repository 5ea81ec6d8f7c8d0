"""Run a service with uvicorn using host/port/workers from settings.

Exit status of :func:`serve`:

* ``0`` - stopped normally (e.g. SIGTERM from systemd: uvicorn re-raises the signal after the
  graceful shutdown, so the process ends by that signal, which systemd treats as clean);
* ``3`` - the app failed to start (uvicorn's ``STARTUP_FAILURE``);
* :data:`~kraftwerk_apps.common.lifecycle.EXIT_FATAL` (70) - a background task died (see
  ``common/lifecycle.py``): the server was shut down gracefully and the process exits
  non-zero so that ``Restart=on-failure`` restarts it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import uvicorn

from kraftwerk_apps.common import lifecycle
from kraftwerk_apps.common.logging import configure_logging, logging_config
from kraftwerk_apps.common.settings import KafkaClientSettings

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3


def uvicorn_options(settings: KafkaClientSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run`` from the settings."""
    return {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_config": logging_config(settings.log_level),
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "root_path": settings.root_path,
        "proxy_headers": settings.proxy_headers,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "timeout_graceful_shutdown": int(settings.graceful_shutdown_seconds),
        # Longer than NGINX's upstream keepalive_timeout (60s): NGINX closes an idle
        # connection first, so it never sends a request on one uvicorn is closing.
        "timeout_keep_alive": settings.keepalive_timeout_seconds,
        "server_header": False,
    }


def serve(factory_path: str, settings: KafkaClientSettings) -> None:
    """Serve ``factory_path`` (an app factory, ``module:function``) with uvicorn.

    A factory import string (not an app object) is used so that ``workers > 1`` works:
    every worker process builds its own app, settings and Kafka clients.
    """
    configure_logging(settings.log_level)
    options = uvicorn_options(settings)
    if settings.workers > 1:
        # Worker processes cannot reach this process's server object: a fatal failure in a
        # worker raises SIGTERM there and uvicorn's supervisor replaces the worker.
        os.environ[lifecycle.SIGTERM_FALLBACK_ENV] = "1"
        uvicorn.run(factory_path, **options)
    else:
        server = uvicorn.Server(uvicorn.Config(factory_path, **options))

        def _stop() -> None:
            server.should_exit = True

        lifecycle.set_shutdown_handler(_stop)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            lifecycle.set_shutdown_handler(None)
        if not server.started:
            sys.exit(STARTUP_FAILURE)
    reason = lifecycle.fatal_reason()
    if reason is not None:
        log.critical(
            "exiting after a fatal error",
            extra={"reason": reason, "exit_code": lifecycle.EXIT_FATAL},
        )
        sys.exit(lifecycle.EXIT_FATAL)
