"""Background tasks that must not die silently, and a fatal exit for the whole process.

A service's background tasks (Kafka consumers, connect loops, stats) are started through a
:class:`TaskSupervisor`.  When one of them ends unexpectedly - it raised, or a task that
should run forever returned or was cancelled by someone else - the supervisor

1. records the *fatal reason* (the first one wins), which readiness checks report
   (``/readyz`` answers 503 ``{"status": "unavailable", "reason": "fatal: ..."}``);
2. after ``exit_delay`` seconds (so that monitoring can still see the 503) asks the HTTP
   server to shut down gracefully (:func:`request_shutdown`);
3. :func:`kraftwerk_apps.common.server.serve` then exits the process with
   :data:`EXIT_FATAL` (non-zero), so that systemd (``Restart=on-failure``) restarts it.

The fatal reason is also kept process-wide (:func:`fatal_reason`) because the app is built
by a factory inside uvicorn and ``serve()`` only sees the process.

How the server is asked to stop: ``serve()`` registers a handler with
:func:`set_shutdown_handler` (sets uvicorn's ``should_exit``).  Under
``KRAFTWERK_WORKERS>1`` the app runs in uvicorn worker processes; there the fallback raises
``SIGTERM`` in the worker (enabled by ``serve()`` through an internal environment variable):
the worker shuts down gracefully and uvicorn's supervisor starts a fresh one.  Without either
(e.g. unit tests) only the reason is recorded and logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from kraftwerk_apps.common.kafka import cancel_and_wait

log = logging.getLogger(__name__)

EXIT_FATAL = 70
"""Exit status of a process stopped by a fatal background-task failure (EX_SOFTWARE)."""

SIGTERM_FALLBACK_ENV = "_KRAFTWERK_FATAL_SIGTERM"
"""Set to ``1`` by ``serve()`` for uvicorn worker processes (``workers > 1``)."""

_fatal: list[str] = []
_handler: list[Callable[[], None]] = []


def fatal_reason() -> str | None:
    """The first fatal reason recorded in this process, if any."""
    return _fatal[0] if _fatal else None


def record_fatal(reason: str) -> None:
    """Remember ``reason`` process-wide (the first one wins) and log it."""
    if not _fatal:
        _fatal.append(reason)
    log.critical("fatal error, the process will exit", extra={"reason": reason})


def set_shutdown_handler(handler: Callable[[], None] | None) -> None:
    """Install (or with None remove) the callable that stops the HTTP server."""
    _handler.clear()
    if handler is not None:
        _handler.append(handler)


def request_shutdown() -> None:
    """Ask the HTTP server of this process to shut down gracefully."""
    if _handler:
        _handler[0]()
    elif os.environ.get(SIGTERM_FALLBACK_ENV) == "1":
        signal.raise_signal(signal.SIGTERM)
    else:
        log.error("no shutdown handler installed; the process keeps running (not ready)")


def reset() -> None:
    """Forget the fatal reason and the handler (for tests)."""
    _fatal.clear()
    _handler.clear()


class TaskSupervisor:
    """Start named background tasks; any unexpected end of one is fatal for the process.

    ``on_fatal`` (default :func:`request_shutdown`) is called ``exit_delay`` seconds after the
    first fatal failure.  Call :meth:`stop` at shutdown: tasks cancelled by it are not fatal.
    """

    def __init__(
        self,
        *,
        exit_delay: float = 1.0,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self._exit_delay = exit_delay
        self._on_fatal = on_fatal if on_fatal is not None else request_shutdown
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._may_return: set[str] = set()
        self._stopping = False
        self._fatal: str | None = None

    @property
    def fatal_reason(self) -> str | None:
        """Why a task of this supervisor failed (None while all is well)."""
        return self._fatal

    def readiness(self) -> str | None:
        """``"fatal: <reason>"`` after a failure, else None (for readiness checks)."""
        return None if self._fatal is None else f"fatal: {self._fatal}"

    @property
    def tasks(self) -> dict[str, asyncio.Task[Any]]:
        return dict(self._tasks)

    def start(
        self,
        name: str,
        coro: Coroutine[Any, Any, Any],
        *,
        may_return: bool = False,
    ) -> asyncio.Task[Any]:
        """Run ``coro`` as task ``name``.

        With ``may_return=False`` (a loop meant to run until shutdown) a normal return is
        fatal too; with ``may_return=True`` (e.g. a connect-once job) only an exception is.
        """
        if name in self._tasks:
            coro.close()
            raise ValueError(f"task {name!r} already started")
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        if may_return:
            self._may_return.add(name)
        task.add_done_callback(self._done)
        return task

    def fail(self, reason: str) -> None:
        """Declare a fatal failure: readiness fails now, shutdown follows after the delay."""
        if self._stopping or self._fatal is not None:
            return
        self._fatal = reason
        record_fatal(reason)
        loop = asyncio.get_running_loop()
        loop.call_later(self._exit_delay, self._shutdown)

    def _shutdown(self) -> None:
        try:
            self._on_fatal()
        except Exception:  # a broken handler must not hide the fatal reason
            log.exception("shutdown request failed")

    def _done(self, task: asyncio.Task[Any]) -> None:
        if self._stopping:
            return
        name = task.get_name()
        if task.cancelled():
            self.fail(f"background task {name!r} was cancelled unexpectedly")
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "background task crashed",
                extra={"task": name, "error": repr(exc)},
                exc_info=exc,
            )
            self.fail(f"background task {name!r} crashed: {exc!r}")
        elif name not in self._may_return:
            self.fail(f"background task {name!r} stopped unexpectedly")

    async def stop(self) -> None:
        """Cancel all tasks (newest first) and wait for them; their ends are not fatal."""
        self._stopping = True
        for task in reversed(list(self._tasks.values())):
            await cancel_and_wait(task)
