"""At-least-once processing in the consumer group.

The group consumer (``group_id`` = ``KRAFTWERK_GROUP_ID``, ``enable_auto_commit=False``)
handles every record of a poll and then commits, per partition, the offset after the last
record that was processed or dead-lettered.  A crash or rebalance before the commit means
re-delivery (duplicates are possible, loss is not).

* **Transient errors** of the handler (aiokafka's retriable errors, timeouts - one attempt
  may take at most ``KRAFTWERK_PROCESSING_TIMEOUT_SECONDS``) are retried with exponential
  back-off up to ``KRAFTWERK_RETRY_COUNT`` times, then the record goes to the DLQ.
* **Permanent errors** (:class:`ProcessingError`: empty, not UTF-8, not JSON, not an object,
  tombstone; and any other non-transient exception) go straight to the DLQ (``dlq.attempts``
  = 1).
* A DLQ write that fails for good (see ``dlq.py``) raises: the worker stops, which is fatal
  for the process (``/readyz`` 503, exit non-zero, systemd restarts it); what was handled
  before it is committed, the failed record is not and comes again after the restart.
* **Time budget**: handling one poll may take ``KRAFTWERK_POLL_BUDGET_FRACTION`` (0.5) of
  ``KRAFTWERK_MAX_POLL_INTERVAL_MS``.  When it is used up (checked before each record) the
  handled records are committed, each partition with unhandled records is sought back to the
  first of them, and the worker polls again - so the member never exceeds
  ``max.poll.interval.ms`` and is not thrown out of the group, as long as one record's worst
  case (handler retries + DLQ retries) fits in the rest of the interval.
* **Rebalances**: a ``ConsumerRebalanceListener`` marks the member *joined* once partitions
  are assigned (readiness) and not joined from the start of a revocation.  Revocation waits
  until the poll being handled is finished and committed, so a rebalance does not re-deliver
  handled records (and does not write DLQ records twice).
* Records repeating an ``idempotency-key`` seen within the window are dropped (``dedupe.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from kraftwerk_apps.common.kafka import (
    is_transient,
    poll_with_retry,
    retry_transient,
    start_with_retry,
    stop_quietly,
)
from kraftwerk_apps.consumer.dedupe import DedupeWindow, Seen
from kraftwerk_apps.consumer.dlq import DlqWriter
from kraftwerk_apps.consumer.metrics import (
    COMMIT_FAILURES,
    DUPLICATES,
    FAILED,
    POLL_BUDGET_EXCEEDED,
    PROCESSED,
    PROCESSING_SECONDS,
    RETRIES,
)
from kraftwerk_apps.consumer.records import ProcessingError, decode_json_object, idempotency_key
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]

COMMIT_TIMEOUT_SECONDS = 10.0
MIN_REBALANCE_TIMEOUT_MS = 10_000


async def default_handler(record: Any) -> None:
    """The business logic: here, validate that the value is a JSON object (and log it at
    debug level: a log line per message would cost more than the rest of its processing)."""
    payload = decode_json_object(record.value)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "message processed",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "fields": sorted(payload)[:20],
            },
        )


class PollBudget:
    """Time allowed for handling one poll."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + seconds

    def exceeded(self) -> bool:
        return self._clock() >= self._deadline

    def remaining(self) -> float:
        return max(0.0, self._deadline - self._clock())


def rewind_positions(
    batches: Mapping[TopicPartition, Sequence[Any]],
    progress: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Offsets to seek to: the first unhandled record of every partition not fully handled.

    ``progress`` maps a partition to the offset after its last handled record.
    """
    rewind: dict[TopicPartition, int] = {}
    for tp, records in batches.items():
        if not records:
            continue
        done = progress.get(tp)
        if done is None:
            rewind[tp] = records[0].offset
        elif done <= records[-1].offset:
            rewind[tp] = done
    return rewind


class _Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: GroupWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._worker.joined = False
        # Let the poll in progress finish and commit while we still own its partitions.
        async with self._worker.batch_lock:
            pass
        if revoked:
            log.info(
                "partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)}
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.joined = True
        log.info(
            "group member joined",
            extra={"partitions": sorted(tp.partition for tp in assigned)},
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
        self._dedupe = DedupeWindow(settings.dedupe_window_seconds, settings.dedupe_max_keys)
        self.batch_lock = asyncio.Lock()
        self.joined = False
        self.processed = 0
        self.dead_lettered = 0
        self.duplicates = 0

    def _build(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            **s.kafka_kwargs(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_interval_ms=s.max_poll_interval_ms,
            fetch_min_bytes=s.fetch_min_bytes,
            fetch_max_wait_ms=s.group_fetch_max_wait_ms,
            # Like the Java client: members may take up to max.poll.interval.ms to rejoin
            # (revocation waits for the poll in progress); at least the session timeout.
            rebalance_timeout_ms=max(s.max_poll_interval_ms, MIN_REBALANCE_TIMEOUT_MS),
        )

    def readiness(self) -> str | None:
        if self._consumer is None:
            return "group consumer not connected yet"
        if not self.joined:
            return f"group member has not joined group {self._settings.group_id!r} yet"
        return None

    def assigned_partitions(self) -> set[int]:
        if self._consumer is None or not self.joined:
            return set()
        return {tp.partition for tp in self._consumer.assignment()}

    async def run(self) -> None:
        s = self._settings
        await self._dlq.start()
        consumer = await start_with_retry(
            self._build, "group-consumer", s.connect_backoff_seconds, s.connect_backoff_max_seconds
        )
        self._consumer = consumer
        consumer.subscribe([s.topic], listener=_Membership(self))
        while True:
            batches = await self._poll(consumer)
            if not batches:
                continue
            async with self.batch_lock:
                await self._handle_poll(consumer, batches)

    async def stop(self) -> None:
        self.joined = False
        await stop_quietly(self._consumer)
        self._consumer = None

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        s = self._settings
        return await poll_with_retry(
            consumer,
            "group-consumer",
            timeout_ms=1000,
            max_records=s.max_poll_records,
            retries=s.retry_count,
            backoff=s.retry_backoff_seconds,
            backoff_max=s.retry_backoff_max_seconds,
        )

    async def _handle_poll(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]
    ) -> None:
        budget = PollBudget(self._settings.poll_budget_seconds)
        progress: dict[TopicPartition, int] = {}
        try:
            for tp, records in batches.items():
                for record in records:
                    if budget.exceeded():
                        self._rewind(consumer, rewind_positions(batches, progress))
                        return
                    await self._handle(record)
                    progress[tp] = record.offset + 1
        finally:
            await self._commit(consumer, progress)

    def _rewind(self, consumer: AIOKafkaConsumer, rewind: dict[TopicPartition, int]) -> None:
        POLL_BUDGET_EXCEEDED.inc()
        log.warning(
            "poll time budget used up; committing what was handled and polling again",
            extra={
                "budget_seconds": self._settings.poll_budget_seconds,
                "rewind": {str(tp.partition): off for tp, off in rewind.items()},
            },
        )
        for tp, offset in rewind.items():
            try:
                consumer.seek(tp, offset)
            except KafkaError as exc:  # not assigned any more: the new owner reads it
                log.info("cannot seek back", extra={"partition": tp.partition, "error": repr(exc)})

    async def _handle(self, record: Any) -> None:
        key = idempotency_key(record)
        if key is not None and self._dedupe.is_repeat(key, Seen.of(record)):
            DUPLICATES.labels("group").inc()
            self.duplicates += 1
            log.info(
                "duplicate idempotency key dropped",
                extra={"partition": record.partition, "offset": record.offset},
            )
            return
        started = time.perf_counter()
        try:
            attempts, error = await self._process(record)
            if error is None:
                PROCESSED.inc()
                self.processed += 1
                return
            FAILED.labels("transient" if is_transient(error) else "permanent").inc()
            reason = str(error) if isinstance(error, ProcessingError) else repr(error)
            await self._dlq.send(record, reason, attempts)
            self.dead_lettered += 1
        finally:
            PROCESSING_SECONDS.observe(time.perf_counter() - started)

    async def _process(self, record: Any) -> tuple[int, Exception | None]:
        """Run the handler with retries of transient errors: (attempts, final error or None)."""
        s = self._settings
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            async with asyncio.timeout(s.processing_timeout_seconds):
                await self._handler(record)

        def on_retry(number: int, exc: BaseException) -> None:
            RETRIES.inc()
            log.info(
                "processing failed, retrying",
                extra={
                    "partition": record.partition,
                    "offset": record.offset,
                    "attempt": number,
                    "error": repr(exc),
                },
            )

        try:
            await retry_transient(
                attempt,
                retries=s.retry_count,
                backoff=s.retry_backoff_seconds,
                backoff_max=s.retry_backoff_max_seconds,
                on_retry=on_retry,
            )
        except Exception as exc:  # noqa: BLE001 - any failure -> DLQ (by the caller)
            return attempts, exc
        return attempts, None

    async def _commit(
        self, consumer: AIOKafkaConsumer, progress: dict[TopicPartition, int]
    ) -> None:
        if not progress:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                await consumer.commit(dict(progress))
        except (KafkaError, AssertionError, TimeoutError) as exc:
            COMMIT_FAILURES.inc()
            log.warning(
                "offset commit failed; records will be re-delivered",
                extra={
                    "offsets": {str(tp.partition): off for tp, off in progress.items()},
                    "error": repr(exc),
                },
            )
