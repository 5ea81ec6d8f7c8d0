"""The Kafka side of the producer.

``KafkaSender`` owns one idempotent ``AIOKafkaProducer`` (``acks="all"``,
``enable_idempotence=True``).  It connects in the background with exponential back-off so
that the HTTP app starts (and reports 503 on ``/readyz`` and ``/send``) while Kafka is down.

A ``Submission`` hands messages to Kafka and gives one *outcome future* per message: a
single message with ``send()``, several as whole record batches (``RecordBatchSubmission``).
The HTTP layer waits on those futures (never cancelling them), so a request deadline cannot
cancel aiokafka's delivery future.  What is known for certain:

* ``NotConnectedError`` (raised by ``submit``): nothing was handed to aiokafka.
* ``NotWrittenError`` (an outcome): ``AIOKafkaProducer.send()`` / ``send_batch()`` raised or
  was cancelled before it appended the record (batch) to the partition's queue, so the
  record cannot reach Kafka.  Every await in them (metadata wait, waiting for buffer space
  or for the previous batch to be taken) comes before the append, which is synchronous;
  cancelling them is therefore safe (aiokafka documents it too).
* Any other exception is a broker/transport error after the record was enqueued: see
  ``outcomes.py`` for which of those still mean "certainly not written".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.partitioner import DefaultPartitioner

from kraftwerk_apps.common.kafka import (
    cancel_and_wait,
    probe_metadata,
    start_with_retry,
    stop_quietly,
)
from kraftwerk_apps.common.lifecycle import TaskSupervisor
from kraftwerk_apps.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

ABANDONED = "not enqueued before the request deadline (abandoned)"
PARTITIONER = DefaultPartitioner()

CODEC_CHECKS: dict[str, Callable[[], bool]] = {
    "gzip": has_gzip,
    "snappy": has_snappy,
    "lz4": has_lz4,
    "zstd": has_zstd,
}


# The per-message value objects are not frozen: a frozen dataclass's __init__ costs three
# times as much, and there are several per message.
@dataclass(slots=True)
class OutgoingMessage:
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int
    timestamp: int | None


class NotConnectedError(Exception):
    """The producer has not (yet) connected to Kafka; nothing was enqueued."""


class NotWrittenError(Exception):
    """The record was never appended to a producer batch, so it cannot reach Kafka."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class EnqueueDeadlineError(NotWrittenError):
    """The request deadline passed while aiokafka still waited (metadata / buffer space)."""


# Hands one message to the client; returns the client's delivery future (resolving to an
# object with topic/partition/offset/timestamp attributes, e.g. aiokafka's RecordMetadata).
Enqueue = Callable[[OutgoingMessage], Awaitable["asyncio.Future[Any]"]]


def mark_retrieved(fut: asyncio.Future[Any]) -> None:
    """Outcomes nobody waits for any more (deadline passed) must not log 'never retrieved'."""
    if not fut.cancelled():
        fut.exception()


class Submission:
    """Messages handed to Kafka by ``run``; one outcome future per message.

    ``run`` enqueues the messages in order in the caller's task (no task of its own:
    aiokafka's ``send()`` normally returns at once).  Cancelling ``run`` (the request
    deadline) stops enqueuing: the messages not enqueued yet fail with
    ``EnqueueDeadlineError`` (certainly not written).  Enqueued messages are not affected:
    their outcome stays pending until the broker answers, and nothing cancels them.
    ``done`` resolves when every outcome has.
    """

    def __init__(self, messages: Sequence[OutgoingMessage], enqueue: Enqueue | None) -> None:
        loop = asyncio.get_running_loop()
        self._messages = messages
        self._enqueue = enqueue
        self.outcomes: list[asyncio.Future[Delivery]] = [loop.create_future() for _ in messages]
        self.done: asyncio.Future[None] = loop.create_future()
        self._pending = len(messages)
        self._enqueued = [False] * len(messages)
        if not messages:
            self.done.set_result(None)

    async def run(self) -> None:
        try:
            await self._enqueue_all()
        finally:  # also when cancelled at the deadline
            for i, enqueued in enumerate(self._enqueued):
                if not enqueued:
                    self._resolve(i, EnqueueDeadlineError(ABANDONED))

    async def _enqueue_all(self) -> None:
        """One ``enqueue`` (aiokafka ``send()``) per message."""
        if self._enqueue is None:
            raise TypeError("Submission without enqueue")
        for i, msg in enumerate(self._messages):
            try:
                kafka_future = await self._enqueue(msg)
            except Exception as exc:  # noqa: BLE001 - raised before the append: not written
                self._resolve(i, NotWrittenError(f"not enqueued: {exc!r}", exc))
                continue
            self._enqueued[i] = True
            kafka_future.add_done_callback(partial(self._settle, i))

    def _settle(self, index: int, kafka_future: asyncio.Future[Any]) -> None:
        if kafka_future.cancelled():
            self._resolve(index, asyncio.CancelledError("delivery future cancelled"))
        elif (exc := kafka_future.exception()) is not None:
            self._resolve(index, exc)
        else:
            md = kafka_future.result()
            self._resolve(index, Delivery(md.topic, md.partition, md.offset, md.timestamp))

    def _resolve(self, index: int, result: Delivery | BaseException) -> None:
        outcome = self.outcomes[index]
        if outcome.done():
            return
        if isinstance(result, Delivery):
            outcome.set_result(result)
        else:
            outcome.set_exception(result)
        self._pending -= 1
        if not self._pending and not self.done.done():
            self.done.set_result(None)


class RecordBatchSubmission(Submission):
    """Several messages as whole record batches: aiokafka's batch API (``create_batch``,
    ``send_batch``), one batch per partition instead of one ``send()`` per message, which
    costs a quarter of the CPU per message.

    Partitions are chosen like ``send()`` does (aiokafka's ``DefaultPartitioner``: murmur2 of
    the key), except that the messages without a key all go to one randomly chosen partition
    (like Java's sticky partitioner) instead of one random partition each.  Every message
    gets its own offset (the batch's base offset + its position) and timestamp, as with
    ``send()``.  A record is never larger than ``max_request_size`` here (the HTTP body limit
    is half of it), so ``send()``'s size check is not needed.
    """

    def __init__(
        self,
        messages: Sequence[OutgoingMessage],
        producer: AIOKafkaProducer,
        topic: str,
        locks: dict[int, asyncio.Lock],
    ) -> None:
        super().__init__(messages, None)
        self._producer = producer
        self._topic = topic
        self._locks = locks

    def _by_partition(self, partitions: list[int]) -> dict[int, list[int]]:
        cluster = self._producer.client.cluster
        available = list(cluster.available_partitions_for_topic(self._topic))
        keyless = PARTITIONER(None, partitions, available)
        groups: dict[int, list[int]] = {}
        for i, msg in enumerate(self._messages):
            p = keyless if msg.key is None else PARTITIONER(msg.key, partitions, available)
            groups.setdefault(p, []).append(i)
        return groups

    async def _enqueue_all(self) -> None:
        producer = self._producer
        try:
            # Waits for the topic's metadata, like send(); list() keeps aiokafka's order.
            partitions = list(await producer.partitions_for(self._topic))
        except Exception as exc:  # noqa: BLE001 - nothing appended: not written
            for i in range(len(self._messages)):
                self._resolve(i, NotWrittenError(f"not enqueued: {exc!r}", exc))
            return
        for partition, indexes in self._by_partition(partitions).items():
            builder = producer.create_batch()
            records: list[tuple[int, Any]] = []
            for i in indexes:
                msg = self._messages[i]
                md = builder.append(
                    key=msg.key, value=msg.value, timestamp=None, headers=msg.headers
                )
                if md is None:  # full: hand it over and start the next one
                    await self._send(builder, partition, records)
                    builder, records = producer.create_batch(), []
                    md = builder.append(
                        key=msg.key, value=msg.value, timestamp=None, headers=msg.headers
                    )
                records.append((i, md))
            await self._send(builder, partition, records)

    async def _send(self, builder: Any, partition: int, records: list[tuple[int, Any]]) -> None:
        lock = self._locks.setdefault(partition, asyncio.Lock())
        try:
            # One waiter per partition inside send_batch(), which waits until the partition's
            # previous batch was taken by the sender (and gives up early with many waiters).
            async with lock:
                batch_future = await self._producer.send_batch(
                    builder, self._topic, partition=partition
                )
        except Exception as exc:  # noqa: BLE001 - raised before the batch was queued
            for i, _ in records:
                self._resolve(i, NotWrittenError(f"not enqueued: {exc!r}", exc))
            return
        for i, _ in records:
            self._enqueued[i] = True
        batch_future.add_done_callback(partial(self._settle_batch, records))

    def _settle_batch(
        self, records: list[tuple[int, Any]], batch_future: asyncio.Future[Any]
    ) -> None:
        if batch_future.cancelled():
            error: BaseException | None = asyncio.CancelledError("delivery future cancelled")
        else:
            error = batch_future.exception()
        if error is not None:
            for i, _ in records:
                self._resolve(i, error)
            return
        md = batch_future.result()
        for i, record in records:
            # -1: no LogAppendTime from the broker, the record's own (create) time counts
            timestamp = record.timestamp if md.timestamp == -1 else md.timestamp
            self._resolve(i, Delivery(md.topic, md.partition, md.offset + record.offset, timestamp))


class MessageSender(Protocol):
    """What the HTTP layer needs; unit tests provide a fake."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def readiness(self) -> str | None: ...
    def submit(self, messages: Sequence[OutgoingMessage]) -> Submission:
        """A submission of ``messages`` (to ``run``).

        Raises ``NotConnectedError`` (synchronously) when nothing can be enqueued.
        """
        ...


def check_codec(compression_type: str | None) -> None:
    """Fail at start-up (not in the reconnect loop) when a codec library is missing."""
    if compression_type is not None and not CODEC_CHECKS[compression_type]():
        raise RuntimeError(
            f"compression_type={compression_type} needs cramjam: install "
            "'aiokafka[lz4,snappy,zstd]'"
        )


class KafkaSender:
    def __init__(
        self, settings: ProducerSettings, supervisor: TaskSupervisor | None = None
    ) -> None:
        check_codec(settings.compression_type)
        self._settings = settings
        # The connect task runs under the app's supervisor: if it dies, /readyz fails and the
        # process exits (non-zero) so that systemd restarts it.
        self._supervisor = supervisor
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._partition_locks: dict[int, asyncio.Lock] = {}

    def _build(self) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            **s.kafka_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_bytes,
            compression_type=s.compression_type,
            max_request_size=max(s.max_body_bytes * 2, 1_048_576),
        )

    async def start(self) -> None:
        if self._supervisor is not None:
            self._connect_task = self._supervisor.start(
                "producer-connect", self._connect(), may_return=True
            )
        else:
            self._connect_task = asyncio.create_task(self._connect(), name="producer-connect")

    async def _connect(self) -> None:
        s = self._settings
        self._producer = await start_with_retry(
            self._build, "producer", s.connect_backoff_seconds, s.connect_backoff_max_seconds
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._connect_task)
        # stop() flushes pending batches, so nothing already enqueued is dropped silently.
        await stop_quietly(self._producer)
        self._producer = None

    async def readiness(self) -> str | None:
        if self._producer is None:
            return "kafka producer not connected yet"
        return await probe_metadata(self._producer.client, self._settings.readiness_timeout_seconds)

    def submit(self, messages: Sequence[OutgoingMessage]) -> Submission:
        producer = self._producer
        if producer is None:
            raise NotConnectedError("kafka producer not connected")
        topic = self._settings.topic

        async def enqueue(msg: OutgoingMessage) -> asyncio.Future[Any]:
            fut: asyncio.Future[Any] = await producer.send(
                topic, value=msg.value, key=msg.key, headers=msg.headers
            )
            return fut

        if len(messages) > 1:
            return RecordBatchSubmission(messages, producer, topic, self._partition_locks)
        # One message: send() appends it to the partition's open batch, which concurrent
        # requests share (a batch of its own would leave one record per produce request).
        return Submission(messages, enqueue)
