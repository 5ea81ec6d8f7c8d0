"""Small helpers around aiokafka clients: connect with back-off, a reachability probe, the
classification of errors into transient and permanent, and the codec check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiokafka import codec as kafka_codec
from aiokafka.errors import KafkaError, KafkaTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
)

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_HEADER = "idempotency-key"
"""Record header set by the producer from the HTTP ``Idempotency-Key`` (consumer dedupes)."""


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: aiokafka's retriable errors, timeouts, lost connections.

    aiokafka marks ``KafkaTimeoutError`` (e.g. delivery timed out) as not retriable, but a
    timeout is transient by nature, so it is retried here (with a limit, by the callers).
    """
    if isinstance(exc, TimeoutError | KafkaTimeoutError | ConnectionError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def missing_codecs() -> list[str]:
    """Compression codecs aiokafka cannot handle here (needs cramjam); gzip is built in.

    One record in a codec the client cannot decompress stops every reader of its partition,
    so the services refuse to start without them.
    """
    checks = {
        "snappy": kafka_codec.has_snappy,
        "lz4": kafka_codec.has_lz4,
        "zstd": kafka_codec.has_zstd,
        "gzip": kafka_codec.has_gzip,
    }
    return [name for name, available in checks.items() if not available()]


class Startable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ClientT = TypeVar("ClientT", bound=Startable)
T = TypeVar("T")


async def retry_transient(
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    backoff: float,
    backoff_max: float,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``attempt()``, retrying transient errors (``is_transient``) up to ``retries`` times.

    After the n-th failed attempt it sleeps ``backoff * 2 ** (n - 1)`` seconds, at most
    ``backoff_max`` (tenacity's ``wait_exponential``), after calling ``on_retry(n, error)``.
    Anything else, or the last failure, is raised.  A plain loop rather than tenacity: this
    runs for every poll and every record, and tenacity's machinery cost more than either.
    """
    number = 1
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if number > retries or not is_transient(exc):
                raise
            if on_retry is not None:
                on_retry(number, exc)
            await asyncio.sleep(min(backoff_max, backoff * 2 ** (number - 1)))
            number += 1


async def start_with_retry(
    factory: Callable[[], ClientT],
    name: str,
    backoff: float,
    backoff_max: float,
) -> ClientT:
    """Create and start a client, retrying forever (until cancelled) with exponential back-off.

    A failed client is stopped and a fresh one is built for each attempt, because aiokafka
    clients are not meant to be restarted.
    """

    def _log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "kafka client not started, retrying",
            extra={"client": name, "attempt": state.attempt_number, "error": repr(exc)},
        )

    async def _attempt() -> ClientT:
        client = factory()
        try:
            await client.start()
        except BaseException:
            await _quiet_stop(client)
            raise
        return client

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential(multiplier=backoff, max=backoff_max),
        before_sleep=_log,
        reraise=True,
    )
    client: ClientT = await retrying(_attempt)
    log.info("kafka client started", extra={"client": name})
    return client


async def _quiet_stop(client: Startable) -> None:
    try:
        await client.stop()
    except Exception as exc:  # noqa: BLE001 - best effort clean-up
        log.debug("ignoring error while stopping client", extra={"error": repr(exc)})


async def probe_metadata(client: Any, limit_s: float) -> str | None:
    """Ask the cluster for metadata through an ``AIOKafkaClient``; None if it answered."""
    try:
        async with asyncio.timeout(limit_s):
            cluster = await client.fetch_all_metadata()
    except TimeoutError:
        return f"kafka metadata request timed out after {limit_s:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"kafka unreachable: {exc!r}"
    if not cluster.brokers():
        return "kafka returned no brokers"
    return None


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # noqa: BLE001 - shutting down anyway
        log.debug("background task ended with error", extra={"error": repr(exc)})


async def stop_quietly(client: Startable | None) -> None:
    if client is not None:
        await _quiet_stop(client)


async def poll_with_retry(
    consumer: Any,
    name: str,
    *,
    timeout_ms: int,
    max_records: int,
    retries: int,
    backoff: float,
    backoff_max: float,
) -> dict[Any, list[Any]]:
    """``consumer.getmany`` that retries transient errors (``is_transient``) with back-off.

    Anything else, or a transient error ``retries`` times in a row, is raised: the caller's
    background task dies, which is fatal (the process exits and systemd restarts it).
    """

    def _on_retry(attempt: int, exc: BaseException) -> None:
        log.warning(
            "poll failed, retrying",
            extra={"client": name, "attempt": attempt, "error": repr(exc)},
        )

    async def _poll() -> dict[Any, list[Any]]:
        batches: dict[Any, list[Any]] = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=max_records
        )
        return batches

    return await retry_transient(
        _poll, retries=retries, backoff=backoff, backoff_max=backoff_max, on_retry=_on_retry
    )
