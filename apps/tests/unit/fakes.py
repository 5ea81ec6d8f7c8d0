from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kraftwerk_apps.producer.gateway import (
    Delivery,
    NotConnectedError,
    OutgoingMessage,
    Submission,
)

# What happens to one enqueued message:
#   "ok"     enqueued and acknowledged at once
#   "hang"   enqueued, never acknowledged (until ``resolve_pending``)
#   "stall"  ``send()`` never returns (metadata / buffer wait): not enqueued
#   ("raise", exc)   ``send()`` raises exc: not enqueued
#   exc      enqueued, the delivery future fails with exc (broker error)
Behaviour = str | tuple[str, BaseException] | BaseException


class FakeSender:
    """Stands in for Kafka in unit tests: records what was enqueued, assigns offsets."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.mode: Behaviour = "ok"  # default behaviour; "down" = not connected
        self.plan: list[Behaviour] = []  # per message, consumed first
        self.pending: list[tuple[Delivery, asyncio.Future[Any]]] = []
        self.ready_reason: str | None = None
        self.started = False
        self.submits = 0

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def readiness(self) -> str | None:
        return self.ready_reason

    def submit(self, messages: Sequence[OutgoingMessage]) -> Submission:
        if self.mode == "down":
            raise NotConnectedError("kafka producer not connected")
        self.submits += 1
        return Submission(messages, self._enqueue)

    def _delivery(self, msg: OutgoingMessage) -> Delivery:
        partition = (len(msg.key) % 3) if msg.key else 0
        return Delivery("test-topic", partition, len(self.sent) - 1, 1700000000000)

    async def _enqueue(self, msg: OutgoingMessage) -> asyncio.Future[Any]:
        behaviour = self.plan.pop(0) if self.plan else self.mode
        if behaviour == "stall":
            await asyncio.sleep(3600)
        if isinstance(behaviour, tuple):
            raise behaviour[1]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(msg)
        if behaviour == "hang":
            self.pending.append((self._delivery(msg), fut))
        elif isinstance(behaviour, BaseException):
            fut.set_exception(behaviour)
        else:
            fut.set_result(self._delivery(msg))
        return fut

    def resolve_pending(self) -> None:
        """Acknowledge every hanging message (call from the app's event loop)."""
        for delivery, fut in self.pending:
            if not fut.done():
                fut.set_result(delivery)
        self.pending.clear()
