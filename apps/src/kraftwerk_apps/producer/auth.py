"""API-key authentication (``X-API-Key``): 401 when missing, 403 when wrong."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Header

from kraftwerk_apps.producer.deps import Context
from kraftwerk_apps.producer.errors import ApiError


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


async def require_api_key(
    context: Context,
    x_api_key: Annotated[
        str | None,
        Header(description="API key; one of KRAFTWERK_API_KEYS."),
    ] = None,
) -> None:
    if not x_api_key:
        raise ApiError(
            401,
            "unauthorized",
            "missing X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    # latin-1: the bytes as received (Starlette decoded them as latin-1).
    if not context.api_keys or not key_matches(x_api_key.encode("latin-1"), context.api_keys):
        raise ApiError(403, "forbidden", "invalid API key")
