"""At-least-once processing in the consumer group.

The group consumer (``group_id`` = ``KRAFTWERK_GROUP_ID``, ``enable_auto_commit=False``)
processes every record, retrying failures with exponential back-off (tenacity) up to
``KRAFTWERK_RETRY_COUNT`` times, then hands it to the DLQ writer.  Offsets are committed per
partition only after every record of the fetched batch was processed or dead-lettered.  A
crash or rebalance before the commit means re-delivery (duplicates are possible, loss is
not).  A commit refused because the partition was revoked is logged and counted; the new
owner re-processes from the last committed offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from kraftwerk_apps.common.kafka import start_with_retry, stop_quietly
from kraftwerk_apps.consumer.dlq import DlqWriter
from kraftwerk_apps.consumer.metrics import COMMIT_FAILURES, PROCESSED, PROCESSING_SECONDS, RETRIES
from kraftwerk_apps.consumer.records import ProcessingError, decode_json_object
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]


async def default_handler(record: Any) -> None:
    """The business logic: here, validate that the value is a JSON object and log it."""
    payload = decode_json_object(record.value)
    log.info(
        "message processed",
        extra={
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "fields": sorted(payload)[:20],
        },
    )


class GroupWorker:
    def __init__(
        self,
        settings: ConsumerSettings,
        dlq: DlqWriter,
        handler: Handler = default_handler,
    ) -> None:
        self._settings = settings
        self._dlq = dlq
        self._handler = handler
        self._consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.dead_lettered = 0

    def _build(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            s.topic,
            **s.kafka_kwargs(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
        )

    def assigned_partitions(self) -> set[int]:
        if self._consumer is None:
            return set()
        return {tp.partition for tp in self._consumer.assignment()}

    async def run(self) -> None:
        s = self._settings
        self._consumer = await start_with_retry(
            self._build, "group-consumer", s.connect_backoff_seconds, s.connect_backoff_max_seconds
        )
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=s.max_poll_records)
            for tp, records in batches.items():
                for record in records:
                    await self._process(record)
                await self._commit(consumer, tp, records[-1].offset + 1)

    async def stop(self) -> None:
        await stop_quietly(self._consumer)
        self._consumer = None

    async def _process(self, record: Any) -> None:
        s = self._settings
        started = time.perf_counter()

        def _before_sleep(state: RetryCallState) -> None:
            RETRIES.inc()
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "processing failed, retrying",
                extra={
                    "partition": record.partition,
                    "offset": record.offset,
                    "attempt": state.attempt_number,
                    "error": str(exc),
                },
            )

        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.retry_count + 1),
                wait=wait_exponential(
                    multiplier=s.retry_backoff_seconds, max=s.retry_backoff_max_seconds
                ),
                retry=retry_if_exception_type(Exception),
                before_sleep=_before_sleep,
                reraise=True,
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    await self._handler(record)
        except Exception as exc:  # noqa: BLE001 - any failure -> DLQ, keep consuming
            reason = str(exc) if isinstance(exc, ProcessingError) else repr(exc)
            await self._dlq.send(record, reason, attempts)
            self.dead_lettered += 1
        else:
            PROCESSED.inc()
            self.processed += 1
        finally:
            PROCESSING_SECONDS.observe(time.perf_counter() - started)

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except (KafkaError, AssertionError) as exc:
            COMMIT_FAILURES.inc()
            log.warning(
                "offset commit failed; records will be re-delivered",
                extra={"partition": tp.partition, "offset": offset, "error": repr(exc)},
            )
