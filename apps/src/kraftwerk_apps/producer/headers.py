"""HTTP request headers that become Kafka record data."""

from __future__ import annotations

from collections.abc import Iterable

from kraftwerk_apps.producer.errors import ApiError
from kraftwerk_apps.producer.idempotency import valid_key

HEADER_PREFIX = b"x-kafka-header-"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def kafka_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, bytes]]:
    """``X-Kafka-Header-Trace-Id: abc`` -> ``("trace-id", b"abc")``.

    Works on the raw header bytes (``request.headers.raw``): Starlette decodes header values
    as latin-1, which turns UTF-8 such as ``Zürich`` into mojibake.  Values must be UTF-8
    (422 ``invalid_unicode`` otherwise) and are passed to Kafka unchanged.
    """
    result: list[tuple[str, bytes]] = []
    for raw_name, value in raw:
        name = raw_name.lower()
        if not name.startswith(HEADER_PREFIX) or len(name) == len(HEADER_PREFIX):
            continue
        kafka_name = name[len(HEADER_PREFIX) :].decode("latin-1")
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(
                422,
                "invalid_unicode",
                f"header X-Kafka-Header-{kafka_name} is not valid UTF-8",
                extra={"errors": [{"loc": ["header", name.decode("latin-1")], "msg": str(exc)}]},
            ) from exc
        result.append((kafka_name, value))
    return result


def idempotency_key(value: str | None) -> str | None:
    """Validate the ``Idempotency-Key`` header: 1..200 printable ASCII characters."""
    if value is None:
        return None
    if not valid_key(value):
        raise ApiError(
            422,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1..200 printable ASCII characters",
            extra={"errors": [{"loc": ["header", "idempotency-key"], "msg": "invalid"}]},
        )
    return value
