"""Publishing with deadlines and idempotency keys, independent of HTTP.

``Publisher.publish`` takes prepared messages and returns one ``Outcome`` per message,
always, including when the deadline passes: acknowledged results are never thrown away.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from kraftwerk_apps.producer import outcomes
from kraftwerk_apps.producer.gateway import (
    Delivery,
    MessageSender,
    NotConnectedError,
    OutgoingMessage,
    Submission,
    mark_retrieved,
)
from kraftwerk_apps.producer.idempotency import Entry, KeyReusedError, ReplayCache, fingerprint
from kraftwerk_apps.producer.metrics import ACK_LATENCY, ERRORS, MESSAGES
from kraftwerk_apps.producer.outcomes import Outcome


@dataclass(slots=True)
class Item:
    message: OutgoingMessage
    idempotency_key: str | None = None


class IdempotencyConflictError(Exception):
    def __init__(self, index: int, key: str) -> None:
        super().__init__(key)
        self.index = index
        self.key = key


@dataclass(slots=True)
class _Slot:
    outcome: asyncio.Future[Delivery] | None = None
    replayed: bool = False
    failed: Outcome | None = None
    fingerprint: bytes | None = None
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
        deadline_at = asyncio.get_running_loop().time() + self.deadline_seconds
        # Everything up to the first await is synchronous, so concurrent requests with the
        # same key see each other's in-flight entry.
        slots = self._plan(items)
        submission = self._submit(items, slots)
        replays = [
            s.outcome
            for s in slots
            if s.replayed and s.outcome is not None and not s.outcome.done()
        ]
        try:
            async with asyncio.timeout_at(deadline_at):
                if submission is not None:
                    # Enqueue (cancelled at the deadline: what was not enqueued yet is then
                    # certainly not written), then wait for the acknowledgements.
                    await submission.run()
                    await submission.done  # our own future: cancelling it is harmless
                if replays:
                    await asyncio.wait(replays)  # other requests' outcomes: never cancelled
        except TimeoutError:
            pass  # the outcomes still pending are reported as unknown
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
            if entry is None:
                slots.append(_Slot(fingerprint=fp))
            else:
                slots.append(_Slot(outcome=entry.outcome, replayed=True))
        return slots

    def _submit(self, items: list[Item], slots: list[_Slot]) -> Submission | None:
        todo = [i for i, s in enumerate(slots) if s.outcome is None and s.same_as is None]
        submission = None
        if todo:
            try:
                submission = self.sender.submit([items[i].message for i in todo])
            except NotConnectedError as exc:
                for i in todo:
                    slots[i].failed = outcomes.classify(exc)
            else:
                for n, i in enumerate(todo):
                    slot = slots[i]
                    slot.outcome = submission.outcomes[n]
                    key = items[i].idempotency_key
                    if key is not None and slot.fingerprint is not None:
                        self.cache.remember(key, Entry(slot.fingerprint, slot.outcome))
        for slot in slots:
            if slot.same_as is not None:
                first = slots[slot.same_as]
                slot.outcome, slot.failed = first.outcome, first.failed
        return submission

    def _outcome(self, slot: _Slot) -> Outcome:
        if slot.failed is not None:
            return slot.failed
        fut = slot.outcome
        if fut is None or not fut.done():
            if fut is not None:
                fut.add_done_callback(mark_retrieved)
            return outcomes.deadline_passed(self.deadline_seconds)
        if fut.cancelled():
            return outcomes.unknown("the delivery was cancelled")
        exc = fut.exception()
        if exc is not None:
            return outcomes.classify(exc)
        return outcomes.acked(fut.result(), replayed=slot.replayed)

    @staticmethod
    def _observe(results: list[Outcome], started: float) -> None:
        counts = Counter(
            ("replayed" if r.replayed else "acked") if r.status == "ok" else r.status
            for r in results
        )
        for outcome, count in counts.items():
            MESSAGES.labels(outcome).inc(count)
        if counts.keys() - {"acked", "replayed"}:
            kinds = Counter(r.kind or "other" for r in results if r.status != "ok")
            for kind, count in kinds.items():
                ERRORS.labels(kind).inc(count)
        if results and counts.keys() <= {"acked", "replayed"}:
            ACK_LATENCY.observe(time.perf_counter() - started)
