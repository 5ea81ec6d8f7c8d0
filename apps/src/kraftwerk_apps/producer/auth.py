"""API-key authentication (``X-API-Key``): 401 when missing, 403 when wrong."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Header

from kraftwerk_apps.producer.errors import ApiError


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


def api_key_dependency(
    keys: list[bytes],
) -> Callable[..., Coroutine[Any, Any, None]]:
    async def require_api_key(
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
        if not keys or not key_matches(x_api_key.encode(), keys):
            raise ApiError(403, "forbidden", "invalid API key")

    return require_api_key
