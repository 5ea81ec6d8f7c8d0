"""The Kafka side of the producer.

``KafkaSender`` owns one idempotent ``AIOKafkaProducer`` (``acks="all"``,
``enable_idempotence=True``).  It connects in the background with exponential back-off so
that the HTTP app starts (and reports 503 on ``/readyz`` and ``/send``) while Kafka is down.

A ``Submission`` hands messages to Kafka in order, one background task per submission, and
gives one *outcome future* per message.  The HTTP layer waits on those futures (never
cancelling them), so a request deadline cannot cancel aiokafka's delivery future.  What is
known for certain:

* ``NotConnectedError`` (raised by ``submit``): nothing was handed to aiokafka.
* ``NotWrittenError`` (an outcome): ``AIOKafkaProducer.send()`` raised or was cancelled
  before it appended the record to a batch, so the record cannot reach Kafka.  Every await
  in aiokafka's ``send()`` (metadata wait, waiting for buffer space) comes before the
  append, which is synchronous; cancelling it is therefore safe (aiokafka documents it too).
* Any other exception is a broker/transport error after the record was enqueued: see
  ``outcomes.py`` for which of those still mean "certainly not written".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

from kraftwerk_apps.common.kafka import (
    cancel_and_wait,
    probe_metadata,
    start_with_retry,
    stop_quietly,
)
from kraftwerk_apps.common.lifecycle import TaskSupervisor
from kraftwerk_apps.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

# How long ``Submission.abandon`` waits for the cancelled enqueue step to unwind.
ABANDON_GRACE_SECONDS = 1.0

CODEC_CHECKS: dict[str, Callable[[], bool]] = {
    "gzip": has_gzip,
    "snappy": has_snappy,
    "lz4": has_lz4,
    "zstd": has_zstd,
}


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int
    timestamp: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _mark_retrieved(fut: asyncio.Future[Any]) -> None:
    """Outcomes nobody waits for any more (deadline passed) must not log 'never retrieved'."""
    if not fut.cancelled():
        fut.exception()


class Submission:
    """Messages handed to Kafka in order by one background task; one outcome per message."""

    def __init__(self, messages: Sequence[OutgoingMessage], enqueue: Enqueue) -> None:
        loop = asyncio.get_running_loop()
        self.outcomes: list[asyncio.Future[Delivery]] = [loop.create_future() for _ in messages]
        for fut in self.outcomes:
            fut.add_done_callback(_mark_retrieved)
        self._enqueued = [False] * len(messages)
        self._task = asyncio.create_task(self._run(list(messages), enqueue), name="kafka-enqueue")
        self._task.add_done_callback(self._fail_unenqueued)

    @property
    def task(self) -> asyncio.Task[None]:
        return self._task

    def enqueued(self, index: int) -> bool:
        return self._enqueued[index]

    async def _run(self, messages: list[OutgoingMessage], enqueue: Enqueue) -> None:
        for i, msg in enumerate(messages):
            try:
                kafka_future = await enqueue(msg)
            except Exception as exc:  # noqa: BLE001 - raised before the append: not written
                self.outcomes[i].set_exception(NotWrittenError(f"not enqueued: {exc!r}", exc))
                continue
            self._enqueued[i] = True
            kafka_future.add_done_callback(partial(self._settle, i))

    def _settle(self, index: int, kafka_future: asyncio.Future[Any]) -> None:
        outcome = self.outcomes[index]
        if outcome.done():
            return
        if kafka_future.cancelled():
            outcome.set_exception(asyncio.CancelledError("delivery future cancelled"))
        elif (exc := kafka_future.exception()) is not None:
            outcome.set_exception(exc)
        else:
            md = kafka_future.result()
            outcome.set_result(Delivery(md.topic, md.partition, md.offset, md.timestamp))

    def _fail_unenqueued(self, _: asyncio.Task[None]) -> None:
        for i, outcome in enumerate(self.outcomes):
            if not outcome.done() and not self._enqueued[i]:
                outcome.set_exception(
                    EnqueueDeadlineError("not enqueued before the request deadline (abandoned)")
                )

    async def abandon(self) -> None:
        """Stop enqueuing: messages not yet enqueued fail with ``EnqueueDeadlineError``.

        Already enqueued messages are not affected (their outcome stays pending until the
        broker answers).
        """
        if self._task.done():
            return
        self._task.cancel()
        await asyncio.wait([self._task], timeout=ABANDON_GRACE_SECONDS)
        if self._task.done():
            self._fail_unenqueued(self._task)


class MessageSender(Protocol):
    """What the HTTP layer needs; unit tests provide a fake."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def readiness(self) -> str | None: ...
    def submit(self, messages: Sequence[OutgoingMessage]) -> Submission:
        """Start handing ``messages`` to Kafka (in order) without waiting.

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
        self._submissions: set[asyncio.Task[None]] = set()

    def _build(self) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            **s.kafka_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=s.linger_ms,
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
        for task in list(self._submissions):
            await cancel_and_wait(task)

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

        submission = Submission(messages, enqueue)
        self._submissions.add(submission.task)
        submission.task.add_done_callback(self._submissions.discard)
        return submission
