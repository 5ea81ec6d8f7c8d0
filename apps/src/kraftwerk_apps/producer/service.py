"""Publishing with deadlines and idempotency keys, independent of HTTP.

``Publisher.publish`` takes prepared messages and returns one ``Outcome`` per message,
always, including when the deadline passes: acknowledged results are never thrown away.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from kraftwerk_apps.producer import outcomes
from kraftwerk_apps.producer.gateway import (
    Delivery,
    MessageSender,
    NotConnectedError,
    OutgoingMessage,
    Submission,
)
from kraftwerk_apps.producer.idempotency import Entry, KeyReusedError, ReplayCache, fingerprint
from kraftwerk_apps.producer.metrics import ACK_LATENCY, MESSAGES
from kraftwerk_apps.producer.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class Item:
    message: OutgoingMessage
    idempotency_key: str | None = None


class IdempotencyConflictError(Exception):
    def __init__(self, index: int, key: str) -> None:
        super().__init__(key)
        self.index = index
        self.key = key


@dataclass
class _Slot:
    outcome: asyncio.Future[Delivery] | None = None
    replayed: bool = False
    # Set when this request submitted the message: (submission, index in it).
    submitted: tuple[Submission, int] | None = None
    failed: Outcome | None = None
    # A repeat of an idempotency key earlier in the same batch: that item's index.
    same_as: int | None = None


class Publisher:
    def __init__(self, sender: MessageSender, cache: ReplayCache, deadline_seconds: float) -> None:
        self.sender = sender
        self.cache = cache
        self.deadline_seconds = deadline_seconds

    async def publish(self, items: list[Item]) -> list[Outcome]:
        """Send ``items`` (or reuse earlier sends by idempotency key) within the deadline.

        Raises ``IdempotencyConflictError`` before anything is sent when a key was used for
        a different request.
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + self.deadline_seconds
        # Everything up to the first await is synchronous, so concurrent requests with the
        # same key see each other's in-flight entry.
        slots = self._plan(items)
        self._submit(items, slots)
        waiting = {s.outcome for s in slots if s.outcome is not None and not s.outcome.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, deadline_at - loop.time()))
        submissions = {s.submitted[0] for s in slots if s.submitted is not None}
        if any(s.outcome is not None and not s.outcome.done() for s in slots):
            # Messages not handed to aiokafka yet are certainly not written once abandoned.
            for submission in submissions:
                await submission.abandon()
        results = [self._outcome(slot) for slot in slots]
        self._observe(results, started)
        return results

    def _plan(self, items: list[Item]) -> list[_Slot]:
        slots: list[_Slot] = []
        seen: dict[str, tuple[bytes, int]] = {}
        for index, item in enumerate(items):
            key = item.idempotency_key
            if key is None:
                slots.append(_Slot())
                continue
            msg = item.message
            fp = fingerprint(msg.value, msg.key, msg.headers)
            if key in seen:  # the same key twice in one batch
                first_fp, first = seen[key]
                if first_fp != fp:
                    raise IdempotencyConflictError(index, key)
                slots.append(_Slot(replayed=True, same_as=first))
                continue
            seen[key] = (fp, index)
            try:
                entry = self.cache.lookup(key, fp)
            except KeyReusedError as exc:
                raise IdempotencyConflictError(index, key) from exc
            slots.append(_Slot() if entry is None else _Slot(outcome=entry.outcome, replayed=True))
        return slots

    def _submit(self, items: list[Item], slots: list[_Slot]) -> None:
        todo = [i for i, s in enumerate(slots) if s.outcome is None and s.same_as is None]
        if todo:
            try:
                submission = self.sender.submit([items[i].message for i in todo])
            except NotConnectedError as exc:
                for i in todo:
                    slots[i].failed = outcomes.classify(exc)
            else:
                for n, i in enumerate(todo):
                    slots[i].outcome = submission.outcomes[n]
                    slots[i].submitted = (submission, n)
                    key = items[i].idempotency_key
                    if key is not None:
                        msg = items[i].message
                        fp = fingerprint(msg.value, msg.key, msg.headers)
                        self.cache.remember(key, Entry(fp, submission.outcomes[n]))
        for slot in slots:
            if slot.same_as is not None:
                first = slots[slot.same_as]
                slot.outcome, slot.failed = first.outcome, first.failed

    def _outcome(self, slot: _Slot) -> Outcome:
        if slot.failed is not None:
            return slot.failed
        fut = slot.outcome
        if fut is None or not fut.done():
            return outcomes.deadline_passed(self.deadline_seconds)
        if fut.cancelled():
            return outcomes.unknown("the delivery was cancelled")
        exc = fut.exception()
        if exc is not None:
            return outcomes.classify(exc)
        return outcomes.acked(fut.result(), replayed=slot.replayed)

    @staticmethod
    def _observe(results: list[Outcome], started: float) -> None:
        for result in results:
            if result.status == "ok":
                MESSAGES.labels("replayed" if result.replayed else "acked").inc()
            else:
                MESSAGES.labels(result.status).inc()
        if results and all(r.status == "ok" for r in results):
            ACK_LATENCY.observe(time.perf_counter() - started)
