"""The data behind ``/``, ``/messages`` and ``/events``: latest messages plus offsets/lag."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from kraftwerk_apps.consumer.cluster import ClusterView
from kraftwerk_apps.consumer.events import Broadcaster, sse
from kraftwerk_apps.consumer.history import HistoryReader
from kraftwerk_apps.consumer.metrics import LAG
from kraftwerk_apps.consumer.processing import GroupWorker
from kraftwerk_apps.consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


def partition_rows(
    partitions: list[int],
    end: dict[int, int],
    committed: dict[int, int],
    assigned_here: set[int],
) -> list[dict[str, Any]]:
    rows = []
    for p in partitions:
        end_offset = end.get(p)
        done = committed.get(p)
        lag = None
        if end_offset is not None:
            lag = max(end_offset - (done or 0), 0)
        rows.append(
            {
                "partition": p,
                "committed": done,
                "end_offset": end_offset,
                "lag": lag,
                "assigned_here": p in assigned_here,
            }
        )
    return rows


class Dashboard:
    def __init__(
        self,
        settings: ConsumerSettings,
        cluster: ClusterView,
        worker: GroupWorker,
        broadcaster: Broadcaster,
    ) -> None:
        self._settings = settings
        self._cluster = cluster
        self._worker = worker
        self.broadcaster = broadcaster
        self.history = HistoryReader(settings, cluster.list_partitions, self.changed)
        self._rows: list[dict[str, Any]] = []
        self._stats_error: str | None = "offsets not read yet"
        self._updated = 0.0

    def snapshot(self) -> dict[str, Any]:
        s = self._settings
        return {
            "topic": s.topic,
            "group": s.group_id,
            "instance": INSTANCE,
            "history_size": s.history_size,
            "messages": list(reversed(self.history.messages())),  # newest first
            "partitions": self._rows,
            "total_lag": sum(r["lag"] or 0 for r in self._rows),
            "offsets_error": self._stats_error,
            "offsets_updated": self._updated,
            "processed_here": self._worker.processed,
            "dead_lettered_here": self._worker.dead_lettered,
            "duplicates_dropped_here": {
                "group": self._worker.duplicates,
                "history": self.history.duplicates,
            },
        }

    def snapshot_event(self) -> str:
        return sse("snapshot", self.snapshot())

    def changed(self) -> None:
        if self.broadcaster.subscribers:
            self.broadcaster.publish(self.snapshot_event())

    async def run_stats(self) -> None:
        while True:
            await self._refresh_stats()
            await asyncio.sleep(self._settings.stats_interval_seconds)

    async def _refresh_stats(self) -> None:
        try:
            async with asyncio.timeout(max(self._settings.readiness_timeout_seconds, 5.0)):
                end = await self.history.end_offsets()
                committed = await self._cluster.committed()
        except Exception as exc:  # noqa: BLE001 - shown on the page, retried
            self._stats_error = f"cannot read offsets: {exc!r}"
            log.debug("offset refresh failed", extra={"error": repr(exc)})
            self.changed()
            return
        rows = partition_rows(
            self.history.partitions(), end, committed, self._worker.assigned_partitions()
        )
        for row in rows:
            if row["lag"] is not None:
                LAG.labels(self._settings.topic, str(row["partition"])).set(row["lag"])
        changed = rows != self._rows or self._stats_error is not None
        self._rows, self._stats_error, self._updated = rows, None, time.time()
        if changed:
            self.changed()
