"""Reading the request body with a hard size limit and parsing it as a JSON object."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from kraftwerk_apps.producer.errors import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Reject on ``Content-Length`` first, then count the bytes actually streamed.

    The declared length is not trusted: chunked bodies have none and a client can lie.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError as exc:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(422, "invalid_json", "request body is empty; a JSON object is required")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(422, "invalid_json", f"request body is not valid JSON: {exc}") from exc


def parse_json_object(raw: bytes) -> dict[str, Any]:
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise ApiError(
            422,
            "not_an_object",
            f"request body must be a JSON object, got {type(value).__name__}",
        )
    return value


def encode_value(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
