"""Dead-letter queue writer.

The failed record is copied unchanged (key, value, original headers) to the DLQ topic, and
``dlq.*`` headers record why and where it came from.  The write is acknowledged by the broker
(acks=all, idempotent) *before* the source offset is committed; while Kafka is unavailable
the write is retried with back-off, so a message is never committed without being either
processed or dead-lettered.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from kraftwerk_apps.common.kafka import start_with_retry, stop_quietly
from kraftwerk_apps.consumer.metrics import DLQ
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)


def dlq_headers(record: Any, reason: str, attempts: int, group_id: str) -> list[tuple[str, bytes]]:
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
    original = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")]
    return [(k, v.encode()) for k, v in ours] + original


class DlqWriter:
    def __init__(self, settings: ConsumerSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    def _build(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self._settings.kafka_kwargs(), acks="all", enable_idempotence=True
        )

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            s = self._settings
            self._producer = await start_with_retry(
                self._build,
                "dlq-producer",
                s.connect_backoff_seconds,
                s.connect_backoff_max_seconds,
            )
        return self._producer

    async def send(self, record: Any, reason: str, attempts: int) -> None:
        s = self._settings
        headers = dlq_headers(record, reason, attempts, s.group_id)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(KafkaError),
            wait=wait_exponential(
                multiplier=s.connect_backoff_seconds, max=s.connect_backoff_max_seconds
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                producer = await self._ensure()
                md = await producer.send_and_wait(
                    s.dlq_topic, value=record.value, key=record.key, headers=headers
                )
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
            },
        )

    async def stop(self) -> None:
        await stop_quietly(self._producer)
        self._producer = None
