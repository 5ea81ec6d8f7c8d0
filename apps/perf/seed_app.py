"""A non-durable "seed-style" producer, the reference for POST /send in loadtest.py.

The simplest FastAPI producer: the body as a ``dict``, ``await producer.send(...)`` (which
only appends the record to a batch) and an answer without waiting for the broker's
acknowledgement.  Same aiokafka settings as the real producer otherwise (acks=all,
idempotent), uvicorn without access log.

Environment: SEED_BOOTSTRAP, SEED_TOPIC, SEED_PORT.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import Body, FastAPI

TOPIC = os.environ.get("SEED_TOPIC", "test-topic")
state: dict[str, AIOKafkaProducer] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("SEED_BOOTSTRAP", "127.0.0.1:9092"),
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    state["producer"] = producer
    try:
        yield
    finally:
        await producer.stop()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/send")
async def send(payload: dict[str, Any] = Body(...), key: str | None = None) -> dict[str, Any]:  # noqa: B008
    await state["producer"].send(
        TOPIC, json.dumps(payload).encode(), key=key.encode() if key else None
    )
    return {"status": "queued"}


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("SEED_PORT", "8009")),
        access_log=False,
        log_level="warning",
    )
