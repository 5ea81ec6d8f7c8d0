"""The Kafka side of the producer.

``KafkaSender`` owns one idempotent ``AIOKafkaProducer`` (``acks="all"``,
``enable_idempotence=True``).  It connects in the background with exponential back-off so
that the HTTP app starts (and reports 503 on ``/readyz`` and ``/send``) while Kafka is down.
A send is only reported as delivered when the broker acknowledged it; every wait is bounded
by the caller's deadline.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from kraftwerk_apps.common.kafka import (
    cancel_and_wait,
    probe_metadata,
    start_with_retry,
    stop_quietly,
)
from kraftwerk_apps.producer.settings import ProducerSettings

log = logging.getLogger(__name__)


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
    """The producer has not (yet) connected to Kafka."""


class MessageSender(Protocol):
    """What the HTTP layer needs; unit tests provide a fake."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def readiness(self) -> str | None: ...
    async def send_many(self, messages: list[OutgoingMessage]) -> list[Delivery | BaseException]:
        """Enqueue all, then wait for every acknowledgement; failures are returned, not raised.

        May raise ``NotConnectedError`` before anything was enqueued.
        """
        ...


class KafkaSender:
    def __init__(self, settings: ProducerSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None

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

    async def send_many(self, messages: list[OutgoingMessage]) -> list[Delivery | BaseException]:
        producer = self._producer
        if producer is None:
            raise NotConnectedError("kafka producer not connected")
        futures: list[asyncio.Future[Any] | BaseException] = []
        for msg in messages:
            try:
                fut = await producer.send(
                    self._settings.topic, value=msg.value, key=msg.key, headers=msg.headers
                )
                futures.append(fut)
            except Exception as exc:  # noqa: BLE001 - reported per message
                futures.append(exc)
        results: list[Delivery | BaseException] = []
        for item in futures:
            if isinstance(item, BaseException):
                results.append(item)
                continue
            try:
                # shield: a deadline cancelling *us* must not cancel aiokafka's future.
                md = await asyncio.shield(item)
                results.append(Delivery(md.topic, md.partition, md.offset, md.timestamp))
            except Exception as exc:  # noqa: BLE001 - reported per message
                results.append(exc)
        return results
