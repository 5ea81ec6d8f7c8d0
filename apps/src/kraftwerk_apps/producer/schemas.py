"""Request/response models (used for validation and for the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kraftwerk_apps.producer.idempotency import KEY_PATTERN
from kraftwerk_apps.producer.idempotency import MAX_KEY_LENGTH as MAX_IDEM_LENGTH

MAX_KEY_LENGTH = 1024

ItemStatus = Literal["ok", "failed", "unknown"]


class SendResult(BaseModel):
    status: str = "ok"
    topic: str
    partition: int
    offset: int
    timestamp: int | None = Field(None, description="Broker/producer timestamp (ms since epoch)")
    key: str | None = Field(
        None, description="The record key used: ?key=, else the Idempotency-Key, else null."
    )


class BatchMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: dict[str, Any] = Field(description="The message: any JSON object.")
    key: str | None = Field(
        None,
        max_length=MAX_KEY_LENGTH,
        description="Record key (same key -> same partition). Default: the idempotency key.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Kafka record headers (values sent as UTF-8)."
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IDEM_LENGTH,
        pattern=KEY_PATTERN,
        description=(
            "1..200 printable ASCII characters. Default: `<Idempotency-Key header>:<index>` "
            "when the request carries that header."
        ),
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[BatchMessage] = Field(min_length=1)


class BatchItemResult(BaseModel):
    index: int
    status: ItemStatus = Field(
        description="ok: acknowledged; failed: certainly not written; unknown: may or may "
        "not have been written (retry with the same idempotency key)."
    )
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None
    key: str | None = None
    idempotency_key: str | None = None
    replayed: bool = Field(
        False, description="Answered from the replay cache (this request did not send it)."
    )
    error: str | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    status: ItemStatus = Field(
        description="ok (HTTP 200), unknown (504: some outcome unknown) or failed (503)."
    )
    count: int
    results: list[BatchItemResult]
    error: str | None = Field(None, description="outcome_unknown (504) or send_failed (503).")
    detail: str | None = None


SEND_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "description": "Any JSON object; it becomes the Kafka record value (UTF-8 JSON).",
    "example": {"key": "Hello Kafka!"},
}
