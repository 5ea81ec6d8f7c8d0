"""``POST /send`` and ``POST /send/batch``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from kraftwerk_apps.producer.auth import require_api_key
from kraftwerk_apps.producer.body import (
    encode_value,
    parse_json,
    parse_json_object,
    read_limited_body,
    reject_lone_surrogates,
)
from kraftwerk_apps.producer.deps import Context, ProducerContext
from kraftwerk_apps.producer.errors import ApiError, ErrorBody
from kraftwerk_apps.producer.gateway import OutgoingMessage
from kraftwerk_apps.producer.headers import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    idempotency_key,
    kafka_headers,
)
from kraftwerk_apps.producer.idempotency import KAFKA_HEADER, KEY_PATTERN, MAX_KEY_LENGTH
from kraftwerk_apps.producer.outcomes import Outcome
from kraftwerk_apps.producer.schemas import (
    MAX_KEY_LENGTH as MAX_RECORD_KEY_LENGTH,
)
from kraftwerk_apps.producer.schemas import (
    SEND_BODY_SCHEMA,
    BatchItemResult,
    BatchRequest,
    BatchResult,
    SendResult,
)
from kraftwerk_apps.producer.service import IdempotencyConflictError, Item

RETRY_AFTER_DOC = {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}}
REPLAYED_DOC = {
    REPLAYED_HEADER: {
        "description": "`true` when answered from the replay cache (nothing sent again)",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid Content-Length header"),
    401: _error("X-API-Key header missing"),
    403: _error("X-API-Key not valid"),
    422: _error(
        "Malformed JSON, not a JSON object / invalid batch (`invalid_json`, `not_an_object`, "
        "`invalid_batch`), lone UTF-16 surrogate or non-UTF-8 header (`invalid_unicode`), "
        "invalid Idempotency-Key (`invalid_idempotency_key`), or the key was used for a "
        "different request (`idempotency_key_reused`)"
    ),
}

SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Acknowledged by the broker (acks=all)", "headers": REPLAYED_DOC},
    **COMMON_RESPONSES,
    413: _error(
        "Body larger than KRAFTWERK_MAX_BODY_BYTES (`payload_too_large`) or rejected by "
        "Kafka for its size (`message_too_large`); certainly not written"
    ),
    503: _error(
        "Certainly NOT written, safe to retry: Kafka not connected (`kafka_unavailable`), not "
        "enqueued within the deadline (`kafka_timeout`) or rejected by the broker "
        "(`kafka_rejected`)",
        headers=RETRY_AFTER_DOC,
    ),
    504: _error(
        "Outcome unknown (`outcome_unknown`): no acknowledgement within "
        "KRAFTWERK_REQUEST_DEADLINE_SECONDS or an ambiguous broker error; the message may "
        "or may not have been written. Retry with the same Idempotency-Key."
    ),
}

BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every message acknowledged", "headers": REPLAYED_DOC},
    **COMMON_RESPONSES,
    413: _error(
        "Body larger than KRAFTWERK_MAX_BODY_BYTES or more than KRAFTWERK_BATCH_MAX_SIZE "
        "messages (`batch_too_large`)"
    ),
    503: {
        "model": BatchResult,
        "description": "Some messages certainly not written (`send_failed`), none unknown; "
        "per-message results",
        "headers": RETRY_AFTER_DOC,
    },
    504: {
        "model": BatchResult,
        "description": "Some message outcomes unknown (`outcome_unknown`); per-message "
        "results. Retry with the same idempotency keys.",
    },
}

IDEMPOTENCY_DOC = (
    "Optional, 1..200 printable ASCII characters. Sent to Kafka as record header "
    "`idempotency-key`; used as the record key when there is none. A retry with the same key "
    "within KRAFTWERK_IDEMPOTENCY_WINDOW_SECONDS is answered from this process's replay cache."
)
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        description=IDEMPOTENCY_DOC,
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": KEY_PATTERN},
    ),
]

router = APIRouter(tags=["messages"], dependencies=[Depends(require_api_key)])


def _retry_after(context: ProducerContext, status: int) -> dict[str, str] | None:
    return {"Retry-After": str(context.settings.retry_after_seconds)} if status == 503 else None


def _with_idempotency(headers: list[tuple[str, bytes]], key: str | None) -> list[tuple[str, bytes]]:
    if key is None:
        return headers
    return [h for h in headers if h[0] != KAFKA_HEADER] + [(KAFKA_HEADER, key.encode())]


async def _publish(context: ProducerContext, items: list[Item]) -> list[Outcome]:
    try:
        return await context.publisher.publish(items)
    except IdempotencyConflictError as exc:
        where = f" (message {exc.index})" if len(items) > 1 else ""
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"idempotency key {exc.key!r}{where} was already used for a different request "
            "within the idempotency window; use a new key for a new message",
        ) from exc


@router.post(
    "/send",
    summary="Send one JSON object to Kafka",
    description=(
        "The body (any JSON object) becomes the record value. Optional record key: "
        "`?key=...` (same key -> same partition; default: the Idempotency-Key so that a "
        "retry lands on the same partition). Optional Kafka record headers: HTTP headers "
        "`X-Kafka-Header-<name>: <value>` (name lower-cased, value UTF-8). 200 only after "
        "the broker acknowledged the record (acks=all); 503 only when it was certainly not "
        "written; 504 `outcome_unknown` when that is not known."
    ),
    response_model=SendResult,
    responses=SEND_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SEND_BODY_SCHEMA}},
        }
    },
)
async def send(
    request: Request,
    response: Response,
    context: Context,
    key: Annotated[
        str | None,
        Query(max_length=MAX_RECORD_KEY_LENGTH, description="Kafka record key (partitioning)"),
    ] = None,
    idempotency_key_header: IdempotencyKeyHeader = None,
) -> SendResult:
    idem = idempotency_key(idempotency_key_header)
    raw = await read_limited_body(request, context.settings.max_body_bytes)
    value = encode_value(parse_json_object(raw))
    record_key = key if key is not None else idem
    msg = OutgoingMessage(
        value=value,
        key=record_key.encode() if record_key is not None else None,
        headers=_with_idempotency(kafka_headers(request.headers.raw), idem),
    )
    [outcome] = await _publish(context, [Item(msg, idem)])
    if outcome.delivery is None:
        status = outcome.http_status
        raise ApiError(
            status,
            outcome.error or "internal_error",
            outcome.detail or "",
            headers=_retry_after(context, status),
        )
    if outcome.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return SendResult(**outcome.delivery.as_dict(), key=record_key)


@router.post(
    "/send/batch",
    summary="Send many JSON objects in one request",
    description=(
        'Body: `{"messages": [{"value": {...}, "key": "optional", "headers": {"name": '
        '"value"}, "idempotency_key": "optional"}]}` with at most KRAFTWERK_BATCH_MAX_SIZE '
        "messages (413 above). Always answers per-message `results` (status `ok`, `failed` "
        "= certainly not written, `unknown` = outcome unknown): 200 all ok, 504 if any is "
        "unknown, else 503. Without a per-message `idempotency_key`, an Idempotency-Key "
        "header gives message *i* the key `<header>:<i>`."
    ),
    response_model=BatchResult,
    responses=BATCH_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}
            },
        }
    },
)
async def send_batch(
    request: Request,
    context: Context,
    idempotency_key_header: IdempotencyKeyHeader = None,
) -> JSONResponse:
    settings = context.settings
    base_key = idempotency_key(idempotency_key_header)
    raw = parse_json(await read_limited_body(request, settings.max_body_bytes))
    if isinstance(raw, dict) and isinstance(raw.get("messages"), list):
        count = len(raw["messages"])
        if count > settings.batch_max_size:
            raise ApiError(
                413,
                "batch_too_large",
                f"batch has {count} messages, at most {settings.batch_max_size} allowed",
            )
    reject_lone_surrogates(raw)
    try:
        batch = BatchRequest.model_validate(raw)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise ApiError(
            422, "invalid_batch", "batch body failed validation", extra={"errors": errors}
        ) from exc
    items: list[Item] = []
    keys: list[str | None] = []
    for index, m in enumerate(batch.messages):
        idem = m.idempotency_key or (f"{base_key}:{index}" if base_key is not None else None)
        record_key = m.key if m.key is not None else idem
        keys.append(record_key)
        headers = [(name, v.encode()) for name, v in m.headers.items()]
        msg = OutgoingMessage(
            value=encode_value(m.value),
            key=record_key.encode() if record_key is not None else None,
            headers=_with_idempotency(headers, idem),
        )
        items.append(Item(msg, idem))
    outcomes = await _publish(context, items)
    results = [
        _item_result(i, keys[i], item.idempotency_key, outcome)
        for i, (item, outcome) in enumerate(zip(items, outcomes, strict=True))
    ]
    return _batch_response(context, results)


def _item_result(
    index: int, key: str | None, idem: str | None, outcome: Outcome
) -> BatchItemResult:
    delivery = outcome.delivery.as_dict() if outcome.delivery is not None else {}
    return BatchItemResult(
        index=index,
        status=outcome.status,
        key=key,
        idempotency_key=idem,
        replayed=outcome.replayed,
        error=outcome.error,
        detail=outcome.detail,
        **delivery,
    )


def _batch_response(context: ProducerContext, results: list[BatchItemResult]) -> JSONResponse:
    n = len(results)
    unknown = sum(r.status == "unknown" for r in results)
    failed = sum(r.status == "failed" for r in results)
    headers: dict[str, str] = {}
    if unknown:
        status = 504
        body = BatchResult(
            status="unknown",
            count=n,
            results=results,
            error="outcome_unknown",
            detail=f"{unknown} of {n} messages have an unknown outcome (they may or may not "
            f"have been written), {failed} certainly failed; retry with the same idempotency "
            "keys (Idempotency-Key header or per-message idempotency_key)",
        )
    elif failed:
        status = 503
        headers.update(_retry_after(context, 503) or {})
        body = BatchResult(
            status="failed",
            count=n,
            results=results,
            error="send_failed",
            detail=f"{failed} of {n} messages were certainly not written (see results); "
            "retrying them is safe",
        )
    else:
        status = 200
        body = BatchResult(status="ok", count=n, results=results)
        if all(r.replayed for r in results):
            headers[REPLAYED_HEADER] = "true"
    content = body.model_dump(mode="json", exclude={"error", "detail"} if status == 200 else None)
    return JSONResponse(content, status_code=status, headers=headers or None)
