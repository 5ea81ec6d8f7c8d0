"""API-key authentication (``X-API-Key``): 401 when missing, 403 when wrong."""

from __future__ import annotations

import hmac
from typing import Any

from kraftwerk_apps.producer.errors import ApiError

API_KEY_HEADER = "x-api-key"
API_KEY_PARAMETER: dict[str, Any] = {
    "name": API_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": "API key; one of KRAFTWERK_API_KEYS.",
    "schema": {"type": "string"},
}


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


def check_api_key(value: str | None, keys: list[bytes]) -> None:
    """``value`` is the ``X-API-Key`` header as Starlette gives it (decoded as latin-1)."""
    if not value:
        raise ApiError(
            401,
            "unauthorized",
            "missing X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    # latin-1: the bytes as received.
    if not keys or not key_matches(value.encode("latin-1"), keys):
        raise ApiError(403, "forbidden", "invalid API key")
