"""Seed-style reference producer for ./kw bench: the non-durable baseline of ``POST /api/send``.

``POST /send`` parses the JSON object, hands it to an ``AIOKafkaProducer`` (``await producer.send()``: enqueued
in a batch) and answers 200 at once, WITHOUT awaiting the broker's acknowledgement (fire-and-forget): a crash
or a broker error after the answer loses the message silently. That is what a naive "seed" producer does, and
what ``POST /api/send`` must not do; the bench measures what the durable answer costs next to it.

Everything else is the producer app's: its settings (the ``KRAFTWERK_*`` environment from its env files: Kafka
listener, SASL/SCRAM, CA, topic, linger, compression), its producer (``KafkaSender._build``: acks=all,
idempotent; a copy of those arguments if that private helper ever changes) and its uvicorn options. Run by
bench/seed.yml as ``kraftwerk-bench-seed@<port>.service`` with the producer's venv python, one instance per
producer instance, behind the same NGINX (``/bench/seed/``). ``GET /config`` shows the producer settings used.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kraftwerk_apps.producer.settings import ProducerSettings

log = logging.getLogger("kraftwerk-bench-seed")


def build_producer(settings: ProducerSettings) -> tuple[AIOKafkaProducer, str]:
    """The producer app's own AIOKafkaProducer (same arguments), and how it was built."""
    try:
        from kraftwerk_apps.producer.gateway import KafkaSender  # noqa: PLC0415

        return KafkaSender(settings)._build(), "KafkaSender._build"  # noqa: SLF001
    except (ImportError, AttributeError, TypeError) as exc:
        log.warning("KafkaSender._build not usable (%r): using a copy of its arguments", exc)
    producer = AIOKafkaProducer(
        **settings.kafka_kwargs(),
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        compression_type=settings.compression_type,
        max_request_size=max(settings.max_body_bytes * 2, 1_048_576),
    )
    return producer, "copy of KafkaSender._build's arguments"


def create_app() -> FastAPI:
    settings = ProducerSettings(client_id="kraftwerk-bench-seed")
    keys = settings.api_key_bytes()
    venv = str(Path(sys.prefix).resolve())
    state: dict[str, Any] = {"producer": None, "builder": None, "failed": 0}

    def _count_failure(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            state["failed"] += 1

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        producer, builder = build_producer(settings)
        await producer.start()
        state["producer"], state["builder"] = producer, builder
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(title="kraftwerk bench seed-style producer", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/config")
    async def config() -> dict[str, Any]:
        return {
            "builder": state["builder"],
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": settings.linger_ms,
            "compression_type": settings.compression_type,
            "topic": settings.topic,
            "security_protocol": settings.security_protocol,
            "sasl_mechanism": settings.sasl_mechanism,
            "delivery_failures_after_answer": state["failed"],
            # The producer's venv this process runs from (a new release of the apps is a new venv).
            "venv": venv,
        }

    @app.post("/send")
    async def send(request: Request) -> JSONResponse:
        given = request.headers.get("x-api-key", "").encode()
        if not any(hmac.compare_digest(given, k) for k in keys):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            value = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid_json"}, status_code=422)
        if not isinstance(value, dict):
            return JSONResponse({"error": "not_an_object"}, status_code=422)
        producer = state["producer"]
        if producer is None:
            return JSONResponse({"error": "kafka_unavailable"}, status_code=503)
        # Enqueued, not acknowledged: the delivery future is left alone (fire-and-forget).
        delivery = await producer.send(settings.topic, value=json.dumps(value, separators=(",", ":")).encode())
        delivery.add_done_callback(_count_failure)
        return JSONResponse({"status": "queued"})

    return app


def main() -> None:
    from kraftwerk_apps.common.server import uvicorn_options  # noqa: PLC0415

    settings = ProducerSettings()
    options = uvicorn_options(settings)
    options.update(port=int(os.environ["BENCH_SEED_PORT"]), workers=1, root_path="", factory=True)
    uvicorn.run("seed_app:create_app", **options)


if __name__ == "__main__":
    main()
