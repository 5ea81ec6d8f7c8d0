"""Producer FastAPI application (``create_app`` is the uvicorn factory).

Contract
--------
* ``POST /send``: body = any JSON object -> one Kafka record (value = compact UTF-8 JSON).
  Optional record key in the ``key`` query parameter; optional Kafka record headers as HTTP
  headers named ``X-Kafka-Header-<name>`` (the Kafka header name is ``<name>`` lower-cased,
  the value is the UTF-8 header value).  Answers 200 only after the broker acknowledged
  the record (``acks=all``, idempotent producer).
* ``POST /send/batch``: ``{"messages": [{"value": {...}, "key": "k", "headers": {...}}]}``.
* Auth: ``X-API-Key``; 401 missing, 403 wrong.  413 body too large / too many messages,
  422 malformed or non-object JSON, 503 Kafka unavailable or no ack within the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from fastapi import Depends, FastAPI, Query, Request
from pydantic import ValidationError

from kraftwerk_apps import __version__
from kraftwerk_apps.common.health import health_router
from kraftwerk_apps.common.metrics import instrument, metrics_router
from kraftwerk_apps.producer.auth import api_key_dependency
from kraftwerk_apps.producer.body import (
    encode_value,
    parse_json,
    parse_json_object,
    read_limited_body,
)
from kraftwerk_apps.producer.errors import ApiError, ErrorBody, install_error_handlers
from kraftwerk_apps.producer.gateway import (
    Delivery,
    KafkaSender,
    MessageSender,
    NotConnectedError,
    OutgoingMessage,
)
from kraftwerk_apps.producer.metrics import ACK_LATENCY, MESSAGES
from kraftwerk_apps.producer.schemas import (
    MAX_KEY_LENGTH,
    SEND_BODY_SCHEMA,
    BatchItemResult,
    BatchRequest,
    BatchResult,
    SendResult,
)
from kraftwerk_apps.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

HEADER_PREFIX = "x-kafka-header-"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "X-API-Key header missing"},
    403: {"model": ErrorBody, "description": "X-API-Key not valid"},
    413: {"model": ErrorBody, "description": "Body larger than KRAFTWERK_MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "Malformed JSON or not a JSON object"},
    503: {"model": ErrorBody, "description": "Kafka unavailable or no ack within the deadline"},
}


def kafka_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """``X-Kafka-Header-Trace-Id: abc`` -> ``("trace-id", b"abc")``."""
    return [
        (name[len(HEADER_PREFIX) :], value.encode())
        for name, value in headers.items()
        if name.lower().startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX)
    ]


def _failure(exc: BaseException) -> ApiError:
    if isinstance(exc, MessageSizeTooLargeError):
        return ApiError(413, "message_too_large", f"kafka rejected the message size: {exc!r}")
    if isinstance(exc, KafkaError):
        return ApiError(503, "kafka_unavailable", f"kafka did not acknowledge: {exc!r}")
    return ApiError(500, "internal_error", f"unexpected error: {exc!r}")


def create_app(
    settings: ProducerSettings | None = None, sender: MessageSender | None = None
) -> FastAPI:
    settings = settings or ProducerSettings()
    kafka: MessageSender = sender or KafkaSender(settings)
    if not settings.api_keys:
        log.warning("KRAFTWERK_API_KEYS is empty: every /send request will be rejected (403)")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await kafka.start()
        try:
            yield
        finally:
            await kafka.stop()

    app = FastAPI(
        title="kraftwerk producer",
        version=__version__,
        description=__doc__,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    instrument(app, "producer")
    app.include_router(health_router(kafka.readiness))
    app.include_router(metrics_router())
    auth = Depends(api_key_dependency(settings.api_key_bytes()))

    async def deliver(messages: list[OutgoingMessage]) -> list[Delivery | BaseException]:
        deadline = settings.request_deadline_seconds
        started = time.perf_counter()
        try:
            async with asyncio.timeout(deadline):
                results = await kafka.send_many(messages)
        except NotConnectedError as exc:
            MESSAGES.labels("unavailable").inc(len(messages))
            raise ApiError(503, "kafka_unavailable", str(exc)) from exc
        except TimeoutError as exc:
            MESSAGES.labels("timeout").inc(len(messages))
            raise ApiError(
                503,
                "kafka_timeout",
                f"no broker acknowledgement within {deadline:g}s; "
                "the message was not confirmed and may or may not have been written",
            ) from exc
        ACK_LATENCY.observe(time.perf_counter() - started)
        for result in results:
            MESSAGES.labels("failed" if isinstance(result, BaseException) else "acked").inc()
        return results

    @app.post(
        "/send",
        summary="Send one JSON object to Kafka",
        description=(
            "The body (any JSON object) becomes the record value. Optional record key: "
            "`?key=...` (same key -> same partition). Optional Kafka record headers: HTTP "
            "headers `X-Kafka-Header-<name>: <value>` (name lower-cased). Answers only "
            "after the broker acknowledged the record (acks=all)."
        ),
        response_model=SendResult,
        responses=ERROR_RESPONSES,
        dependencies=[auth],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SEND_BODY_SCHEMA}},
            }
        },
        tags=["messages"],
    )
    async def send(
        request: Request,
        key: Annotated[
            str | None,
            Query(max_length=MAX_KEY_LENGTH, description="Kafka record key (partitioning)"),
        ] = None,
    ) -> SendResult:
        value = parse_json_object(await read_limited_body(request, settings.max_body_bytes))
        msg = OutgoingMessage(
            value=encode_value(value),
            key=key.encode() if key is not None else None,
            headers=kafka_headers(request.headers),
        )
        [result] = await deliver([msg])
        if isinstance(result, BaseException):
            raise _failure(result)
        return SendResult(**result.as_dict(), key=key)

    @app.post(
        "/send/batch",
        summary="Send many JSON objects in one request",
        description=(
            'Body: `{"messages": [{"value": {...}, "key": "optional", '
            '"headers": {"name": "value"}}]}` with at most KRAFTWERK_BATCH_MAX_SIZE '
            "messages (413 above). 200 when every message was acknowledged; otherwise 503 "
            "with per-message `results` (acknowledged ones carry partition/offset)."
        ),
        response_model=BatchResult,
        responses=ERROR_RESPONSES,
        dependencies=[auth],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": BatchRequest.model_json_schema(
                            ref_template="#/components/schemas/{model}"
                        )
                    }
                },
            }
        },
        tags=["messages"],
    )
    async def send_batch(request: Request) -> BatchResult:
        raw = parse_json(await read_limited_body(request, settings.max_body_bytes))
        if isinstance(raw, dict) and isinstance(raw.get("messages"), list):
            count = len(raw["messages"])
            if count > settings.batch_max_size:
                raise ApiError(
                    413,
                    "batch_too_large",
                    f"batch has {count} messages, at most {settings.batch_max_size} allowed",
                )
        try:
            batch = BatchRequest.model_validate(raw)
        except ValidationError as exc:
            errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
            raise ApiError(
                422, "invalid_batch", "batch body failed validation", extra={"errors": errors}
            ) from exc
        messages = [
            OutgoingMessage(
                value=encode_value(m.value),
                key=m.key.encode() if m.key is not None else None,
                headers=[(k, v.encode()) for k, v in m.headers.items()],
            )
            for m in batch.messages
        ]
        results = await deliver(messages)
        items = [
            _batch_item(i, m.key, r)
            for i, (m, r) in enumerate(zip(batch.messages, results, strict=True))
        ]
        if any(item.status != "ok" for item in items):
            raise ApiError(
                503,
                "partial_failure",
                "not every message was acknowledged; see results",
                extra={"results": [item.model_dump() for item in items]},
            )
        return BatchResult(count=len(items), results=items)

    return app


def _batch_item(index: int, key: str | None, result: Delivery | BaseException) -> BatchItemResult:
    if isinstance(result, BaseException):
        return BatchItemResult(index=index, status="failed", key=key, error=repr(result))
    return BatchItemResult(index=index, status="ok", key=key, **result.as_dict())
