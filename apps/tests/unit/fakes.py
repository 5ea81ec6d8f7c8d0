from __future__ import annotations

import asyncio

from kraftwerk_apps.producer.gateway import Delivery, NotConnectedError, OutgoingMessage


class FakeSender:
    """Stands in for Kafka in unit tests: records what was sent, assigns offsets."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.mode = "ok"  # ok | hang | down | fail-second
        self.ready_reason: str | None = None
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def readiness(self) -> str | None:
        return self.ready_reason

    async def send_many(self, messages: list[OutgoingMessage]) -> list[Delivery | BaseException]:
        if self.mode == "down":
            raise NotConnectedError("kafka producer not connected")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        results: list[Delivery | BaseException] = []
        for i, msg in enumerate(messages):
            if self.mode == "fail-second" and i == 1:
                from aiokafka.errors import KafkaTimeoutError  # noqa: PLC0415

                results.append(KafkaTimeoutError())
                continue
            self.sent.append(msg)
            partition = (len(msg.key) % 3) if msg.key else 0
            results.append(Delivery("test-topic", partition, len(self.sent) - 1, 1700000000000))
        return results
