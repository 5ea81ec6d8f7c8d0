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

from kraftwerk_apps.common.kafka import start_with_retry, stop_quietly
from kraftwerk_apps.consumer.records import display_record
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)


def _order(item: dict[str, Any]) -> tuple[int, int, int]:
    return (item["timestamp"], item["partition"], item["offset"])


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
        )

    async def run(self) -> None:
        s = self._settings
        self._consumer = await start_with_retry(
            self._build, "history-reader", s.connect_backoff_seconds, s.connect_backoff_max_seconds
        )
        consumer = self._consumer
        next_refresh = 0.0
        while True:
            if time.monotonic() >= next_refresh:
                await self._refresh_partitions(consumer)
                next_refresh = time.monotonic() + s.partition_refresh_seconds
            if not self._partitions:
                await asyncio.sleep(1)
                continue
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            new = [display_record(r) for records in batches.values() for r in records]
            if new:
                self._messages = merge_latest(self._messages, new, s.history_size)
                self._on_change()

    async def _refresh_partitions(self, consumer: AIOKafkaConsumer) -> None:
        topic = self._settings.topic
        try:
            found = set(await self._list_partitions(topic))
        except Exception as exc:  # noqa: BLE001 - retried at the next refresh
            log.warning("cannot list partitions", extra={"topic": topic, "error": repr(exc)})
            return
        added = found - self._partitions
        if not added:
            return
        # assign() forgets the positions of partitions that were already assigned: keep them.
        positions = {p: await consumer.position(TopicPartition(topic, p)) for p in self._partitions}
        consumer.assign([TopicPartition(topic, p) for p in sorted(found)])
        new_tps = [TopicPartition(topic, p) for p in sorted(added)]
        begin = await consumer.beginning_offsets(new_tps)
        end = await consumer.end_offsets(new_tps)
        for tp in new_tps:
            consumer.seek(tp, max(begin[tp], end[tp] - self._settings.history_size))
        for p, position in positions.items():
            consumer.seek(TopicPartition(topic, p), position)
        self._partitions = found
        self.ready = True
        log.info("history reader assigned", extra={"topic": topic, "partitions": sorted(found)})

    async def end_offsets(self) -> dict[int, int]:
        consumer = self._consumer
        if consumer is None or not self._partitions:
            return {}
        tps = [TopicPartition(self._settings.topic, p) for p in sorted(self._partitions)]
        offsets = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in offsets.items()}

    async def stop(self) -> None:
        await stop_quietly(self._consumer)
        self._consumer = None
