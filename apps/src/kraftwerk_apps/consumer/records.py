"""Turning Kafka records into display/JSON friendly dictionaries.

Every record the client can read is shown, whatever its bytes: a key, header value or
non-JSON value that is valid UTF-8 is shown as text, anything else as base64 (the
``*_encoding`` field says which).  :func:`display_record` never raises.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from kraftwerk_apps.common.kafka import IDEMPOTENCY_KEY_HEADER

RAW_DISPLAY_BYTES = 4096
"""At most this much of a non-JSON value is shown (``raw_truncated`` says when cut)."""

LOG_APPEND_TIME = 1
TIMESTAMP_TYPES = {0: "CreateTime", LOG_APPEND_TIME: "LogAppendTime"}


class ProcessingError(Exception):
    """A message that can never be processed (permanent): it goes straight to the DLQ."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def decode_json_object(value: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object, else :class:`ProcessingError` with the reason.

    Strict: the bytes must be UTF-8 (no UTF-16/32 guessing), ``NaN``/``Infinity`` and numbers
    that overflow a float are rejected (they could not be served as JSON again).
    """
    if value is None:
        raise ProcessingError("message has no value (tombstone)")
    if not value:
        raise ProcessingError("value is empty")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProcessingError(f"value is not UTF-8 text: {exc}") from exc
    try:
        parsed = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ProcessingError(f"value is not valid JSON: {exc}") from exc
    except ValueError as exc:
        raise ProcessingError(f"value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ProcessingError("value is not valid JSON: nested too deeply") from exc
    if not isinstance(parsed, dict):
        raise ProcessingError(f"value is JSON but not an object ({type(parsed).__name__})")
    return parsed


def show_bytes(raw: bytes | None, limit: int | None = None) -> tuple[str | None, str | None]:
    """``(text, encoding)``: UTF-8 text as is, other bytes as base64; None stays None."""
    if raw is None:
        return None, None
    if limit is not None:
        raw = raw[:limit]
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if (
            limit is not None
            and exc.start >= len(raw) - 3
            and exc.reason == "unexpected end of data"
        ):
            # cut in the middle of a multi-byte character
            return raw[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(raw).decode("ascii"), "base64"


def idempotency_key(record: Any) -> bytes | None:
    """The first ``idempotency-key`` header's value (None when there is none or it is empty)."""
    for name, value in record.headers or ():
        if name == IDEMPOTENCY_KEY_HEADER:
            return bytes(value) if value else None
    return None


def _headers(record: Any) -> list[dict[str, Any]]:
    out = []
    for name, raw in record.headers or ():
        text, encoding = show_bytes(raw)
        out.append({"name": name, "value": text, "encoding": encoding})
    return out


def display_record(record: Any) -> dict[str, Any]:
    """A JSON-serialisable view of an aiokafka ``ConsumerRecord`` (never raises).

    ``valid_json`` with ``value`` for a JSON object; otherwise ``reason`` (the same text the
    DLQ gets), ``raw`` (text or base64, see ``raw_encoding``, at most ``RAW_DISPLAY_BYTES``).
    """
    value: Any = None
    reason: str | None = None
    try:
        value = decode_json_object(record.value)
    except ProcessingError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - never let one record break the page
        reason = f"cannot decode value: {exc!r}"
    raw_value: bytes | None = record.value
    raw, raw_encoding = (None, None)
    if reason is not None:
        raw, raw_encoding = show_bytes(raw_value, RAW_DISPLAY_BYTES)
    key, key_encoding = show_bytes(record.key)
    timestamp_type: int = getattr(record, "timestamp_type", -1)
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "timestamp_type": TIMESTAMP_TYPES.get(timestamp_type, str(timestamp_type)),
        "key": key,
        "key_encoding": key_encoding,
        "headers": _headers(record),
        "value": value,
        "valid_json": reason is None,
        "reason": reason,
        "raw": raw,
        "raw_encoding": raw_encoding,
        "raw_truncated": raw_value is not None
        and reason is not None
        and len(raw_value) > RAW_DISPLAY_BYTES,
        "size": len(raw_value) if raw_value is not None else None,
    }
