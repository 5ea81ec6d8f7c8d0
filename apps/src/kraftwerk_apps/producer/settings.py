"""Producer settings (environment variables with the ``KRAFTWERK_`` prefix)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from kraftwerk_apps.common.settings import KafkaClientSettings, split_csv


class ProducerSettings(KafkaClientSettings):
    port: int = Field(default=8001, ge=1, le=65535)
    client_id: str = "kraftwerk-producer"

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys accepted in the X-API-Key header. Secret.",
    )
    request_deadline_seconds: float = Field(
        default=10.0, gt=0, description="Upper bound for waiting on the broker acknowledgement."
    )
    max_body_bytes: int = Field(default=1_000_000, ge=2)
    batch_max_size: int = Field(default=100, ge=1)
    linger_ms: int = Field(
        default=0,
        ge=0,
        description="Producer linger_ms. 0: a batch goes out as soon as the partition's "
        "broker connection is free; records arriving meanwhile (one produce request per "
        "broker at a time) still share the next batch. Waiting longer only adds latency.",
    )
    max_batch_bytes: int = Field(
        default=524_288,
        ge=1_024,
        le=1_000_000,
        description="aiokafka's max_batch_size: the largest record batch per partition and "
        "produce request (below the broker's 1 MB message.max.bytes).  Large enough for a "
        "whole /send/batch request (each is sent as one batch per partition) and for what "
        "concurrent /send requests add to a partition during one broker round trip.",
    )
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = Field(
        default=None,
        description="Producer batch compression: none (or empty), gzip, snappy, lz4, zstd.",
    )
    retry_after_seconds: int = Field(
        default=2, ge=0, description="Retry-After header value on 503 answers."
    )
    idempotency_window_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long this process remembers an Idempotency-Key (replay cache).",
    )
    idempotency_max_keys: int = Field(
        default=100_000, ge=1, description="Most Idempotency-Keys remembered per process."
    )

    @field_validator("compression_type", mode="before")
    @classmethod
    def _no_compression(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = value.strip().lower()
            return None if value in ("", "none") else value
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return split_csv(value)

    def api_key_bytes(self) -> list[bytes]:
        return [key.get_secret_value().encode() for key in self.api_keys]
