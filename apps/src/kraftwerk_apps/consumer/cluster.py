"""Admin-client access: partitions of a topic, the group's committed offsets, readiness."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from kraftwerk_apps.common.kafka import start_with_retry, stop_quietly
from kraftwerk_apps.consumer.settings import ConsumerSettings


class _Admin(AIOKafkaAdminClient):  # type: ignore[misc]
    async def stop(self) -> None:
        await self.close()


class TopicNotFoundError(Exception):
    pass


class ClusterView:
    def __init__(self, settings: ConsumerSettings) -> None:
        self._settings = settings
        self._admin: _Admin | None = None
        self._connected = asyncio.Event()

    async def run(self) -> None:
        s = self._settings
        self._admin = await start_with_retry(
            lambda: _Admin(**s.kafka_kwargs()),
            "admin",
            s.connect_backoff_seconds,
            s.connect_backoff_max_seconds,
        )
        self._connected.set()

    async def _client(self) -> _Admin:
        await self._connected.wait()
        assert self._admin is not None  # noqa: S101 - set before the event
        return self._admin

    async def list_partitions(self, topic: str) -> list[int]:
        admin = await self._client()
        [info] = await admin.describe_topics([topic])
        if info["error_code"] != 0 or not info["partitions"]:
            raise TopicNotFoundError(f"topic {topic!r} not available (error {info['error_code']})")
        return sorted(int(p["partition"]) for p in info["partitions"])

    async def committed(self) -> dict[int, int]:
        admin = await self._client()
        offsets = await admin.list_consumer_group_offsets(self._settings.group_id)
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == self._settings.topic and meta.offset >= 0
        }

    async def readiness(self) -> str | None:
        if self._admin is None:
            return "kafka admin client not connected yet"
        try:
            async with asyncio.timeout(self._settings.readiness_timeout_seconds):
                await self.list_partitions(self._settings.topic)
        except TimeoutError:
            return "kafka metadata request timed out"
        except TopicNotFoundError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return f"kafka unreachable: {exc!r}"
        return None

    async def stop(self) -> None:
        await stop_quietly(self._admin)
        self._admin = None
