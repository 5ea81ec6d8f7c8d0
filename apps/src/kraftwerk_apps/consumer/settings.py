"""Consumer settings (environment variables with the ``KRAFTWERK_`` prefix)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kraftwerk_apps.common.settings import KafkaClientSettings


class ConsumerSettings(KafkaClientSettings):
    port: int = Field(default=8002, ge=1, le=65535)
    client_id: str = "kraftwerk-consumer"

    group_id: str = "test-group"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(default=100, ge=1)
    history_size: int = Field(default=10, ge=1, le=1000, description="Messages shown on /")
    retry_count: int = Field(default=3, ge=0, description="Retries before a message goes to DLQ")
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    retry_backoff_max_seconds: float = Field(default=10.0, ge=0)
    stats_interval_seconds: float = Field(default=2.0, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    partition_refresh_seconds: float = Field(default=30.0, gt=0)
