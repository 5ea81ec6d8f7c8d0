"""Latest-N view of the topic that is identical on every consumer instance.

Why not show what the group consumer processed?  In a consumer group each partition is owned
by exactly one member, so an instance only sees the messages of *its* partitions: two
instances behind NGINX would show different lists.  Therefore every instance also runs this
**group-less reader**:

* ``AIOKafkaConsumer`` with ``group_id=None`` (no group membership, never commits, does not
  affect the group's offsets or rebalances), ``assign()``-ed to *all* partitions of the topic;
* at start it seeks every partition to ``max(beginning, end - N)`` so it reads at most the
  last N records of each partition (the global latest N is a subset of these), then follows
  the topic live;
* it keeps the N records with the greatest ``(timestamp, partition, offset)``.  Because the
  input (the log) and the ordering are the same everywhere, every instance converges to the
  same list; only the moment a new record shows up may differ by a poll interval;
* partition metadata is re-read every ``KRAFTWERK_PARTITION_REFRESH_SECONDS`` so added
  partitions are picked up.

The order is the records' timestamps: the deployment creates the topic with
``message.timestamp.type=LogAppendTime``, so this is the broker's append time (a record's
``timestamp_type`` says ``LogAppendTime``); on a topic with ``CreateTime`` it is the
producer's clock, and the page shows "CreateTime" next to such a time.

Records repeating an ``idempotency-key`` header within the window are shown once (see
``dedupe.py``): of the copies, the one first in the page order is kept, so every instance
keeps the same one.

Every record is shown, whatever its bytes (``records.display_record``).  Transient errors of
a poll are retried (with a limit); anything else stops the reader, which is fatal for the
process (``/readyz`` 503, exit non-zero).

The group consumer (``processing.py``) independently does the at-least-once processing.
The reader also provides the partitions' end offsets used for the lag display.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from kraftwerk_apps.common.kafka import poll_with_retry, start_with_retry, stop_quietly
from kraftwerk_apps.consumer.dedupe import DedupeWindow, Seen
from kraftwerk_apps.consumer.metrics import DUPLICATES
from kraftwerk_apps.consumer.records import display_record, idempotency_key
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)


def _order(item: dict[str, Any]) -> tuple[int, int, int]:
    return (item["timestamp"], item["partition"], item["offset"])


def _stub(record: Any) -> dict[str, Any]:
    """Where a record is (what ordering and dedupe need), before it is decoded for display."""
    return {
        "timestamp": record.timestamp,
        "partition": record.partition,
        "offset": record.offset,
        "record": record,
    }


def _seen(item: dict[str, Any]) -> Seen:
    return Seen(item["timestamp"], item["partition"], item["offset"])


def drop_repeats(
    window: DedupeWindow,
    current: list[dict[str, Any]],
    new: list[tuple[bytes | None, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Filter ``new`` (idempotency key, display item) pairs through ``window``.

    Of two records with the same key within the window the one first in page order is kept;
    when a new record precedes the kept one, the kept one leaves ``current``.  Returns
    ``(current, new items to merge, number dropped)``.
    """
    kept: list[dict[str, Any]] = []
    gone: set[tuple[int, int]] = set()
    dropped = 0
    for key, item in sorted(new, key=lambda pair: _order(pair[1])):
        if key is None:
            kept.append(item)
            continue
        seen = _seen(item)
        earlier = window.earlier(key, seen)
        if earlier is None:
            window.remember(key, seen)
            kept.append(item)
            continue
        dropped += 1
        if seen < earlier:
            window.remember(key, seen)
            gone.add((earlier.partition, earlier.offset))
            kept.append(item)
    if gone:
        current = [m for m in current if (m["partition"], m["offset"]) not in gone]
        kept = [m for m in kept if (m["partition"], m["offset"]) not in gone]
    return current, kept, dropped


def merge_latest(
    current: list[dict[str, Any]], new: list[dict[str, Any]], size: int
) -> list[dict[str, Any]]:
    """Latest ``size`` records of ``current + new`` in ascending order (no duplicates)."""
    seen = {(m["partition"], m["offset"]) for m in current}
    merged = current + [m for m in new if (m["partition"], m["offset"]) not in seen]
    merged.sort(key=_order)
    return merged[-size:]


class HistoryReader:
    def __init__(
        self,
        settings: ConsumerSettings,
        list_partitions: Callable[[str], Awaitable[list[int]]],
        on_change: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._list_partitions = list_partitions
        self._on_change = on_change
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: set[int] = set()
        self._messages: list[dict[str, Any]] = []
        self._dedupe = DedupeWindow(settings.dedupe_window_seconds, settings.dedupe_max_keys)
        self.duplicates = 0
        self.ready = False

    def messages(self) -> list[dict[str, Any]]:
        return list(self._messages)

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def _build(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self._settings.kafka_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_min_bytes=self._settings.history_fetch_min_bytes,
            fetch_max_wait_ms=self._settings.history_fetch_max_wait_ms,
        )

    async def run(self) -> None:
        s = self._settings
        self._consumer = await start_with_retry(
            self._build, "history-reader", s.connect_backoff_seconds, s.connect_backoff_max_seconds
        )
        consumer = self._consumer
        next_refresh = 0.0
        interval = s.history_poll_interval_ms / 1000
        last_poll = 0.0
        while True:
            if time.monotonic() >= next_refresh:
                ok = await self._refresh_partitions(consumer)
                delay = s.partition_refresh_seconds if ok else min(s.partition_refresh_seconds, 2.0)
                next_refresh = time.monotonic() + delay
            if not self._partitions:
                await asyncio.sleep(1)
                continue
            # Long polls (fetch.min.bytes 1, a long fetch.max.wait.ms) cost nothing while the
            # topic is idle and answer at once when a record comes. Under load, polling at most
            # once an interval keeps the fetches (here and on the brokers) to one per broker per
            # interval: aiokafka fetches a partition again only once its records were taken.
            wait = last_poll + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            batches = await self._poll(consumer)
            records = [r for recs in batches.values() for r in recs]
            if records:
                last_poll = time.monotonic()
                self.add(records)

    def add(self, records: list[Any]) -> None:
        """Show ``records`` (aiokafka ``ConsumerRecord`` s): dedupe, merge, notify.

        Every record goes through the dedupe window, but only the newest ``history_size``
        of them can be on the page, so only those are turned into display items (the
        expensive part: decoding the value and every header).
        """
        size = self._settings.history_size
        stubs = {(r.partition, r.offset): (idempotency_key(r), _stub(r)) for r in records}
        current, new, dropped = drop_repeats(self._dedupe, self._messages, list(stubs.values()))
        if dropped:
            DUPLICATES.labels("history").inc(dropped)
            self.duplicates += dropped
        shown = [display_record(stub["record"]) for stub in sorted(new, key=_order)[-size:]]
        self._messages = merge_latest(current, shown, size)
        self._on_change()

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        s = self._settings
        return await poll_with_retry(
            consumer,
            "history-reader",
            timeout_ms=500,
            max_records=500,
            retries=s.retry_count,
            backoff=s.retry_backoff_seconds,
            backoff_max=s.retry_backoff_max_seconds,
        )

    async def _refresh_partitions(self, consumer: AIOKafkaConsumer) -> bool:
        """Assign newly found partitions; False if that has to be tried again soon."""
        topic = self._settings.topic
        try:
            found = set(await self._list_partitions(topic))
            added = found - self._partitions
            if not added:
                return True
            new_tps = [TopicPartition(topic, p) for p in sorted(added)]
            # Everything that can fail first; assign() + seek() only then (they do not fail).
            # assign() forgets the positions of partitions already assigned: keep them.
            positions = {
                p: await consumer.position(TopicPartition(topic, p)) for p in self._partitions
            }
            begin = await consumer.beginning_offsets(new_tps)
            end = await consumer.end_offsets(new_tps)
        except Exception as exc:  # noqa: BLE001 - e.g. topic missing or Kafka down: retried soon
            log.warning("cannot list partitions", extra={"topic": topic, "error": repr(exc)})
            return False
        consumer.assign([TopicPartition(topic, p) for p in sorted(found)])
        for tp in new_tps:
            consumer.seek(tp, max(begin[tp], end[tp] - self._settings.history_size))
        for p, position in positions.items():
            consumer.seek(TopicPartition(topic, p), position)
        self._partitions = found
        self.ready = True
        log.info("history reader assigned", extra={"topic": topic, "partitions": sorted(found)})
        return True

    async def end_offsets(self) -> dict[int, int]:
        consumer = self._consumer
        if consumer is None or not self._partitions:
            return {}
        tps = [TopicPartition(self._settings.topic, p) for p in sorted(self._partitions)]
        offsets = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in offsets.items()}

    async def stop(self) -> None:
        self.ready = False
        await stop_quietly(self._consumer)
        self._consumer = None
