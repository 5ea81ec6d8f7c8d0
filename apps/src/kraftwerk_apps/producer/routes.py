"""``POST /send`` and ``POST /send/batch``.

The hot path is kept lean on purpose: the endpoints take the bare ``Request`` and read the
headers and the query themselves instead of FastAPI parameters and dependencies (solving
those cost more CPU than everything else of a request), and answer with ready JSON bytes
instead of a response model that FastAPI would validate and serialise again.  The
parameters are still documented in the OpenAPI document (``openapi_extra``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from kraftwerk_apps.producer.auth import API_KEY_HEADER, API_KEY_PARAMETER, check_api_key
from kraftwerk_apps.producer.body import (
    encode_value,
    parse_json,
    parse_json_object,
    read_limited_body,
    reject_lone_surrogates,
)
from kraftwerk_apps.producer.deps import ProducerContext, get_context
from kraftwerk_apps.producer.errors import ApiError, ErrorBody, api_error_response
from kraftwerk_apps.producer.gateway import OutgoingMessage
from kraftwerk_apps.producer.headers import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    idempotency_key,
    kafka_headers,
)
from kraftwerk_apps.producer.idempotency import (
    KAFKA_HEADER,
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    valid_key,
)
from kraftwerk_apps.producer.outcomes import Outcome
from kraftwerk_apps.producer.schemas import (
    MAX_KEY_LENGTH as MAX_RECORD_KEY_LENGTH,
)
from kraftwerk_apps.producer.schemas import (
    SEND_BODY_SCHEMA,
    BatchMessage,
    BatchRequest,
    BatchResult,
    SendResult,
)
from kraftwerk_apps.producer.service import IdempotencyConflictError, Item
from kraftwerk_apps.producer.settings import ProducerSettings

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
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": IDEMPOTENCY_DOC,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
}
KEY_DOC = "Kafka record key (partitioning)"
KEY_PARAMETER: dict[str, Any] = {
    "name": "key",
    "in": "query",
    "required": False,
    "description": KEY_DOC,
    "schema": {"type": "string", "maxLength": MAX_RECORD_KEY_LENGTH},
}


class PlainRoute(APIRoute):
    """A documented FastAPI route whose endpoint takes the bare ``Request`` and returns a
    ``Response``: nothing is solved, validated or serialised for it per request (FastAPI's
    "custom APIRoute class", overriding ``get_route_handler``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


router = APIRouter(tags=["messages"], route_class=PlainRoute)
FIELDS = frozenset(BatchMessage.model_fields)


def route_path(scope: Scope) -> str:
    """The path without the root path (``KRAFTWERK_ROOT_PATH``), as Starlette's router sees it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class DirectRoutes:
    """Pure ASGI middleware: ``POST /send`` and ``POST /send/batch`` go straight to their
    endpoints.

    On the way through FastAPI's router a request passes an exception middleware, an exit
    stack middleware, the matching of every route and two more exit stacks per request,
    which together cost more CPU than the endpoint itself.  The routes stay registered with
    FastAPI (OpenAPI; other methods and paths are FastAPI's as before).  Sits inside the
    metrics middleware, which labels the requests with the route set here.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = {
            route.path: route
            for route in routes
            if isinstance(route, APIRoute) and "POST" in (route.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(route_path(scope))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        try:
            response = await route.endpoint(Request(scope, receive, send))
        except ApiError as exc:
            response = api_error_response(exc)
        await response(scope, receive, send)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(pydantic_core.to_json(content), status, headers, media_type="application/json")


def _authorized(request: Request) -> ProducerContext:
    context = get_context(request)
    check_api_key(request.headers.get(API_KEY_HEADER), context.api_keys)
    return context


def _record_key(request: Request) -> str | None:
    """``?key=`` (the last one if repeated), at most MAX_RECORD_KEY_LENGTH characters."""
    if not request.scope["query_string"]:
        return None
    key = request.query_params.get("key")
    if key is not None and len(key) > MAX_RECORD_KEY_LENGTH:
        raise ApiError(
            422,
            "invalid_request",
            "request validation failed",
            extra={
                "errors": [
                    {
                        "loc": ["query", "key"],
                        "msg": f"String should have at most {MAX_RECORD_KEY_LENGTH} characters",
                    }
                ]
            },
        )
    return key


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
        "parameters": [KEY_PARAMETER, IDEMPOTENCY_PARAMETER, API_KEY_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SEND_BODY_SCHEMA}},
        },
    },
)
async def send(request: Request) -> Response:
    context = _authorized(request)
    key = _record_key(request)
    idem = idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
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
    d = outcome.delivery
    body = {
        "status": "ok",
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "timestamp": d.timestamp,
        "key": record_key,
    }
    return _json(body, headers={REPLAYED_HEADER: "true"} if outcome.replayed else None)


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
        "parameters": [IDEMPOTENCY_PARAMETER, API_KEY_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}
            },
        },
    },
)
async def send_batch(request: Request) -> Response:
    context = _authorized(request)
    settings = context.settings
    base_key = idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    messages = _parse_batch(await read_limited_body(request, settings.max_body_bytes), settings)
    items: list[Item] = []
    keys: list[str | None] = []
    for index, m in enumerate(messages):
        idem = m.get("idempotency_key") or (f"{base_key}:{index}" if base_key is not None else None)
        key = m.get("key")
        record_key = key if key is not None else idem
        keys.append(record_key)
        headers = [(name, v.encode()) for name, v in m.get("headers", {}).items()]
        msg = OutgoingMessage(
            value=encode_value(m["value"]),
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


def _parse_batch(raw: bytes, settings: ProducerSettings) -> list[dict[str, Any]]:
    """The batch's messages (dicts with the fields of ``BatchMessage``), or the error for the
    first problem in the order: invalid JSON, too many messages (413), lone surrogates,
    invalid batch."""
    try:
        plain = _plain_messages(pydantic_core.from_json(raw))
    except ValueError:
        plain = None
    if plain is not None:
        _check_count(len(plain), settings)
        return plain
    # Anything unusual: the steps one by one, pydantic validates and words the errors.
    parsed = parse_json(raw)
    if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
        _check_count(len(parsed["messages"]), settings)
    reject_lone_surrogates(parsed)
    try:
        batch = BatchRequest.model_validate(parsed)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise ApiError(
            422, "invalid_batch", "batch body failed validation", extra={"errors": errors}
        ) from exc
    return [m.model_dump() for m in batch.messages]


def _plain_messages(parsed: Any) -> list[dict[str, Any]] | None:
    """``parsed["messages"]`` when it is plainly what ``BatchRequest`` accepts, checked by
    hand (a third of pydantic's time for a batch), else None: pydantic then decides."""
    if type(parsed) is not dict or len(parsed) != 1:
        return None
    messages = parsed.get("messages")
    if type(messages) is list and messages and all(_plain_message(m) for m in messages):
        return messages
    return None


def _plain_message(m: Any) -> bool:
    """What ``BatchMessage`` accepts unchanged: an object ``value``; ``key`` null or a string
    of at most MAX_RECORD_KEY_LENGTH characters; ``headers`` an object of strings;
    ``idempotency_key`` null or valid; no other field."""
    if type(m) is not dict or type(m.get("value")) is not dict or not m.keys() <= FIELDS:
        return False
    key, idem, headers = m.get("key"), m.get("idempotency_key"), m.get("headers", {})
    return (
        (key is None or (type(key) is str and len(key) <= MAX_RECORD_KEY_LENGTH))
        and (idem is None or (type(idem) is str and valid_key(idem)))
        and type(headers) is dict
        and all(type(v) is str for v in headers.values())
    )


def _check_count(count: int, settings: ProducerSettings) -> None:
    if count > settings.batch_max_size:
        raise ApiError(
            413,
            "batch_too_large",
            f"batch has {count} messages, at most {settings.batch_max_size} allowed",
        )


def _item_result(index: int, key: str | None, idem: str | None, outcome: Outcome) -> dict[str, Any]:
    """One entry of ``results`` (the fields of ``BatchItemResult``, in its order)."""
    d = outcome.delivery
    return {
        "index": index,
        "status": outcome.status,
        "topic": d.topic if d is not None else None,
        "partition": d.partition if d is not None else None,
        "offset": d.offset if d is not None else None,
        "timestamp": d.timestamp if d is not None else None,
        "key": key,
        "idempotency_key": idem,
        "replayed": outcome.replayed,
        "error": outcome.error,
        "detail": outcome.detail,
    }


def _batch_response(context: ProducerContext, results: list[dict[str, Any]]) -> Response:
    n = len(results)
    unknown = sum(r["status"] == "unknown" for r in results)
    failed = sum(r["status"] == "failed" for r in results)
    headers: dict[str, str] = {}
    body: dict[str, Any] = {"status": "ok", "count": n, "results": results}
    if unknown:
        status = 504
        body["status"] = "unknown"
        body["error"] = "outcome_unknown"
        body["detail"] = (
            f"{unknown} of {n} messages have an unknown outcome (they may or may not "
            f"have been written), {failed} certainly failed; retry with the same idempotency "
            "keys (Idempotency-Key header or per-message idempotency_key)"
        )
    elif failed:
        status = 503
        headers.update(_retry_after(context, 503) or {})
        body["status"] = "failed"
        body["error"] = "send_failed"
        body["detail"] = (
            f"{failed} of {n} messages were certainly not written (see results); "
            "retrying them is safe"
        )
    else:
        status = 200
        if all(r["replayed"] for r in results):
            headers[REPLAYED_HEADER] = "true"
    return _json(body, status, headers or None)
