"""Consumer settings (environment variables with the ``KRAFTWERK_`` prefix)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kraftwerk_apps.common.settings import KafkaClientSettings


class ConsumerSettings(KafkaClientSettings):
    port: int = Field(default=8002, ge=1, le=65535)
    client_id: str = "kraftwerk-consumer"

    group_id: str = "test-group"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(
        default=500, ge=1, description="Records per poll of the group consumer (one commit each)"
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1_000,
        description="Kafka's max.poll.interval.ms for the group member (also its rebalance "
        "timeout, at least 10 s).",
    )
    poll_budget_fraction: float = Field(
        default=0.5,
        gt=0,
        le=0.9,
        description="Share of max_poll_interval_ms that processing one poll may use; past it "
        "the processed records are committed and the rest is polled again.",
    )
    history_size: int = Field(default=10, ge=1, le=1000, description="Messages shown on /")

    # --- fetching: fewer, fuller fetch responses cost less CPU (here and on the brokers) ----
    fetch_min_bytes: int = Field(
        default=65_536,
        ge=1,
        description="Kafka's fetch.min.bytes for the group consumer: the broker answers a fetch "
        "once this much is there, or after group_fetch_max_wait_ms.",
    )
    group_fetch_max_wait_ms: int = Field(
        default=200,
        ge=0,
        description="fetch.max.wait.ms of the group consumer: how late processing may start "
        "(fewer polls and offset commits).",
    )
    history_fetch_min_bytes: int = Field(
        default=1,
        ge=1,
        description="fetch.min.bytes of the page's reader: 1 = the broker answers as soon as a "
        "record is there (a new message shows up after one round trip).",
    )
    history_fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        description="fetch.max.wait.ms of the page's reader: how long the broker holds a fetch "
        "while there is nothing new (a long poll: an idle topic costs a few fetches a second).",
    )
    history_poll_interval_ms: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Least time between two polls of the page's reader that returned records: "
        "under load, at most one fetch per broker per interval (a message may show up that much "
        "later).",
    )

    # --- processing and DLQ -------------------------------------------------------------
    retry_count: int = Field(
        default=3, ge=0, description="Retries of a transient processing error before the DLQ"
    )
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    retry_backoff_max_seconds: float = Field(default=10.0, ge=0)
    processing_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Limit of one processing attempt (a timeout is retried)"
    )
    dlq_retry_count: int = Field(
        default=5, ge=0, description="Retries of a retriable DLQ write error before giving up"
    )
    dlq_retry_max_seconds: float = Field(
        default=60.0, gt=0, description="No new DLQ write attempt after this long"
    )
    dlq_truncate_bytes: int = Field(
        default=524_288,
        ge=1_024,
        description="A record too large for the DLQ is written with its value cut to this "
        "many bytes (and the header dlq.truncated); below the broker's 1 MB message.max.bytes.",
    )

    # --- idempotency-key deduplication ----------------------------------------------------
    dedupe_window_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Drop a record whose idempotency-key header repeats one seen at most this "
        "long before (by record timestamp); 0 disables deduplication.",
    )
    dedupe_max_keys: int = Field(
        default=100_000, ge=1, description="Keys remembered per reader (oldest forgotten first)"
    )

    # --- the page's "Cluster health" section (GET /cluster-health) --------------------------
    prometheus_url: str = Field(
        default="",
        description="Base URL of the Prometheus the page's cluster health comes from, e.g. "
        "http://10.0.0.5:9090; empty: the section says 'monitoring not configured'.",
    )
    prometheus_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Limit of one cluster-health refresh (all queries)"
    )
    cluster_health_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long one answer of Prometheus is reused for every browser (also a "
        "failed one: an unreachable Prometheus is asked at most once per period).",
    )

    stats_interval_seconds: float = Field(default=2.0, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    partition_refresh_seconds: float = Field(default=30.0, gt=0)

    @field_validator("prometheus_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def poll_budget_seconds(self) -> float:
        return self.max_poll_interval_ms / 1000 * self.poll_budget_fraction
