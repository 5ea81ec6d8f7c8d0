"""Reading the request body with a hard size limit and parsing it as a JSON object.

JSON is parsed and written with pydantic-core (Rust, several times faster than the ``json``
module).  Whatever it refuses - a lone UTF-16 surrogate, a byte order mark, malformed input -
goes through the ``json`` module, whose results and error messages are the contract; every
document pydantic-core accepts gives the same Python objects as ``json.loads``.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
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
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        pass  # the json module decides (and words the error)
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


def _not_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def surrogate_location(value: Any) -> list[str | int] | None:
    """Path to the first string (or object key) in parsed JSON that is not valid UTF-8.

    Parts that are themselves not valid UTF-8 are given as their ``ascii()`` form so that
    the error response can be encoded.
    """
    if isinstance(value, str):
        return [] if _not_utf8(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if _not_utf8(k):
                return [ascii(k)]
            if (found := surrogate_location(v)) is not None:
                return [k, *found]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (found := surrogate_location(v)) is not None:
                return [i, *found]
    return None


def invalid_unicode(loc: list[str | int]) -> ApiError:
    where = "body" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return ApiError(
        422,
        "invalid_unicode",
        f"{where} contains a lone UTF-16 surrogate (such as \\ud800), which is not valid "
        "Unicode and cannot be encoded as UTF-8",
        extra={"errors": [{"loc": ["body", *loc], "msg": "lone surrogate: not valid Unicode"}]},
    )


def reject_lone_surrogates(value: Any) -> None:
    """422 ``invalid_unicode`` when any string in a parsed JSON document is not UTF-8-safe.

    ``json.loads`` accepts escaped lone surrogates (``"\\ud800"``); they cannot be encoded.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise invalid_unicode(surrogate_location(value) or []) from exc


def encode_value(value: Any) -> bytes:
    """Compact UTF-8 JSON; 422 ``invalid_unicode`` for lone surrogates."""
    try:
        return pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError:
        pass  # a lone surrogate: the json module raises and the error names where
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError as exc:
        raise invalid_unicode(surrogate_location(value) or []) from exc
