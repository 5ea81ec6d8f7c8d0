"""Turning Kafka records into display/JSON friendly dictionaries."""

from __future__ import annotations

import json
from typing import Any


class ProcessingError(Exception):
    """A message that cannot be processed (retried, then dead-lettered)."""


def decode_json_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise ProcessingError("message has no value (tombstone)")
    try:
        parsed = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProcessingError(f"value is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ProcessingError(f"value is JSON but not an object ({type(parsed).__name__})")
    return parsed


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def display_record(record: Any) -> dict[str, Any]:
    """A JSON-serialisable view of an aiokafka ``ConsumerRecord``."""
    value: Any = None
    valid = True
    try:
        value = decode_json_object(record.value)
    except ProcessingError:
        valid = False
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _text(record.key),
        "headers": {name: _text(val) for name, val in (record.headers or ())},
        "value": value,
        "raw": None if valid else _text(record.value),
        "valid_json": valid,
    }
