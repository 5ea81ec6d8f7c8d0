"""Request/response models (used for validation and for the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_KEY_LENGTH = 1024


class SendResult(BaseModel):
    status: str = "ok"
    topic: str
    partition: int
    offset: int
    timestamp: int | None = Field(None, description="Broker/producer timestamp (ms since epoch)")
    key: str | None = None


class BatchMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: dict[str, Any] = Field(description="The message: any JSON object.")
    key: str | None = Field(
        None, max_length=MAX_KEY_LENGTH, description="Same key -> same partition."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Kafka record headers.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[BatchMessage] = Field(min_length=1)


class BatchItemResult(BaseModel):
    index: int
    status: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None
    key: str | None = None
    error: str | None = None


class BatchResult(BaseModel):
    status: str = "ok"
    count: int
    results: list[BatchItemResult]


SEND_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "description": "Any JSON object; it becomes the Kafka record value (UTF-8 JSON).",
    "example": {"key": "Hello Kafka!"},
}
