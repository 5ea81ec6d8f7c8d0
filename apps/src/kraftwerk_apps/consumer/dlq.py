"""Dead-letter queue writer.

The failed record is copied unchanged (key, value, original headers) to the DLQ topic, and
``dlq.*`` headers record why and where it came from:

``dlq.reason``, ``dlq.source.topic``, ``dlq.source.partition``, ``dlq.source.offset``,
``dlq.source.timestamp``, ``dlq.attempts``, ``dlq.consumer.group``, ``dlq.failed.at`` (ms).

The write is acknowledged by the broker (acks=all, idempotent) *before* the source offset is
committed.  Only transient errors (see ``common.kafka.is_transient``) are retried, at most
``KRAFTWERK_DLQ_RETRY_COUNT`` times and not after ``KRAFTWERK_DLQ_RETRY_MAX_SECONDS``.

A record too large for the DLQ (``MessageSizeTooLargeError`` / ``RecordTooLargeError``) is
written once more *truncated*: value cut to ``KRAFTWERK_DLQ_TRUNCATE_BYTES`` (default 512 KiB,
below the broker's 1 MB ``message.max.bytes``), key cut to 1 KiB, original headers kept up
to 16 KiB, with the headers ``dlq.truncated: <original value size in bytes>`` and, when cut,
``dlq.truncated.key: <original key size>`` / ``dlq.truncated.headers: <headers dropped>``.

Any other failure raises :class:`DlqWriteError`: the group worker stops (fatal, the process
exits non-zero), the record's offset is not committed and it is re-delivered after the
restart - never committed without being processed or dead-lettered, and never retried in an
endless loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from kraftwerk_apps.common.kafka import is_transient, start_with_retry, stop_quietly
from kraftwerk_apps.consumer.metrics import DLQ, DLQ_TRUNCATED, DLQ_WRITE_RETRIES
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)

REASON_MAX_CHARS = 2000
TRUNCATED_KEY_BYTES = 1024
TRUNCATED_HEADERS_BYTES = 16 * 1024
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


class DlqWriteError(Exception):
    """The DLQ write failed for good; the record must not be committed."""


@dataclass(frozen=True)
class DlqRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _our_headers(record: Any, reason: str, attempts: int, group_id: str) -> list[tuple[str, bytes]]:
    if len(reason) > REASON_MAX_CHARS:
        reason = reason[: REASON_MAX_CHARS - 3] + "..."
    ours = [
        ("dlq.reason", reason),
        ("dlq.source.topic", record.topic),
        ("dlq.source.partition", str(record.partition)),
        ("dlq.source.offset", str(record.offset)),
        ("dlq.source.timestamp", str(record.timestamp)),
        ("dlq.attempts", str(attempts)),
        ("dlq.consumer.group", group_id),
        ("dlq.failed.at", str(int(time.time() * 1000))),
    ]
    return [(k, v.encode("utf-8", errors="replace")) for k, v in ours]


def _original_headers(record: Any) -> list[tuple[str, bytes]]:
    return [
        (k, v if v is not None else b"")
        for k, v in (record.headers or ())
        if not k.startswith("dlq.")
    ]


def dlq_headers(record: Any, reason: str, attempts: int, group_id: str) -> list[tuple[str, bytes]]:
    return _our_headers(record, reason, attempts, group_id) + _original_headers(record)


def build_dlq_record(
    record: Any,
    reason: str,
    attempts: int,
    group_id: str,
    truncate_to: int | None = None,
) -> DlqRecord:
    """The DLQ copy of ``record``; with ``truncate_to`` the cut-down form (see module doc)."""
    if truncate_to is None:
        return DlqRecord(record.key, record.value, dlq_headers(record, reason, attempts, group_id))
    key: bytes | None = record.key
    value: bytes | None = record.value
    markers = [("dlq.truncated", str(len(value) if value is not None else 0))]
    if value is not None:
        value = value[:truncate_to]
    if key is not None and len(key) > TRUNCATED_KEY_BYTES:
        markers.append(("dlq.truncated.key", str(len(key))))
        key = key[:TRUNCATED_KEY_BYTES]
    kept: list[tuple[str, bytes]] = []
    used = 0
    original = _original_headers(record)
    for name, raw in original:
        size = len(name.encode("utf-8", errors="replace")) + len(raw)
        if used + size > TRUNCATED_HEADERS_BYTES:
            break
        kept.append((name, raw))
        used += size
    if len(kept) < len(original):
        markers.append(("dlq.truncated.headers", str(len(original) - len(kept))))
    headers = (
        _our_headers(record, reason, attempts, group_id)
        + [(k, v.encode()) for k, v in markers]
        + kept
    )
    return DlqRecord(key, value, headers)


class DlqWriter:
    def __init__(self, settings: ConsumerSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    def _build(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self._settings.kafka_kwargs(), acks="all", enable_idempotence=True
        )

    async def start(self) -> None:
        """Connect (with back-off until it works: Kafka may well be down at start-up)."""
        if self._producer is None:
            s = self._settings
            self._producer = await start_with_retry(
                self._build,
                "dlq-producer",
                s.connect_backoff_seconds,
                s.connect_backoff_max_seconds,
            )

    async def send(self, record: Any, reason: str, attempts: int) -> None:
        """Write ``record`` to the DLQ; :class:`DlqWriteError` if that fails for good."""
        s = self._settings
        dlq = build_dlq_record(record, reason, attempts, s.group_id)
        truncated = False
        try:
            md = await self._send(record, dlq, may_be_too_large=True)
        except TOO_LARGE as exc:
            log.warning(
                "record too large for the DLQ, writing it truncated",
                extra={
                    "source_partition": record.partition,
                    "source_offset": record.offset,
                    "value_bytes": len(record.value or b""),
                    "error": repr(exc),
                },
            )
            dlq = build_dlq_record(record, reason, attempts, s.group_id, s.dlq_truncate_bytes)
            md = await self._send(record, dlq, may_be_too_large=False)
            truncated = True
            DLQ_TRUNCATED.inc()
        DLQ.inc()
        log.warning(
            "message dead-lettered",
            extra={
                "source_topic": record.topic,
                "source_partition": record.partition,
                "source_offset": record.offset,
                "dlq_topic": s.dlq_topic,
                "dlq_partition": md.partition,
                "dlq_offset": md.offset,
                "reason": reason,
                "attempts": attempts,
                "truncated": truncated,
            },
        )

    async def _send(self, record: Any, dlq: DlqRecord, *, may_be_too_large: bool) -> Any:
        s = self._settings
        producer = self._producer
        where = f"{record.topic}/{record.partition}@{record.offset}"
        if producer is None:
            raise DlqWriteError(f"DLQ producer not started; cannot dead-letter {where}")

        def _before_sleep(state: RetryCallState) -> None:
            DLQ_WRITE_RETRIES.inc()
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "DLQ write failed, retrying",
                extra={"record": where, "attempt": state.attempt_number, "error": repr(exc)},
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(s.dlq_retry_count + 1)
            | stop_after_delay(s.dlq_retry_max_seconds),
            wait=wait_exponential(
                multiplier=s.retry_backoff_seconds, max=s.retry_backoff_max_seconds
            ),
            before_sleep=_before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return await producer.send_and_wait(
                        s.dlq_topic, value=dlq.value, key=dlq.key, headers=dlq.headers
                    )
        except TOO_LARGE as exc:
            if may_be_too_large:
                raise
            raise DlqWriteError(
                f"DLQ write of {where} to {s.dlq_topic!r} failed: too large even truncated"
            ) from exc
        except Exception as exc:
            raise DlqWriteError(
                f"DLQ write of {where} to {s.dlq_topic!r} failed after {attempts} attempt(s): "
                f"{exc!r}"
            ) from exc
        raise DlqWriteError(f"DLQ write of {where} gave no result")  # pragma: no cover

    async def stop(self) -> None:
        await stop_quietly(self._producer)
        self._producer = None
