"""Producer outcomes against a real Kafka 3.9.1: codecs, idempotent retries, UTF-8, Unicode.

Each test waits for conditions with deadlines (no fixed sleeps).  Records are read back with
a plain ``AIOKafkaConsumer`` (no group), from the beginning up to the end offsets.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.conftest import _create_topics
from tests.integration.conftest import API_KEY
from tests.kafka_server import _java, ensure_libs
from tests.procs import AppProcess, start_app

AUTH = {"X-API-Key": API_KEY}
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BLOB = "kraftwerk " * 2_000  # 20 kB, very compressible
BATCH = 3
READ_TIMEOUT = 30.0
RAW_AUTH = [(b"X-API-Key", API_KEY.encode())]


def _producer_env(bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    return {
        "KRAFTWERK_BOOTSTRAP_SERVERS": bootstrap,
        "KRAFTWERK_TOPIC": topic,
        "KRAFTWERK_API_KEYS": API_KEY,
        "KRAFTWERK_REQUEST_DEADLINE_SECONDS": "10",
        "KRAFTWERK_CONNECT_BACKOFF_SECONDS": "0.2",
        "KRAFTWERK_CONNECT_BACKOFF_MAX_SECONDS": "1",
        **extra,
    }


def _start_producer(env: dict[str, str], logs: Path) -> AppProcess:
    app = start_app("producer", env, logs)
    try:
        app.wait_http("/readyz", 200)
    except BaseException:
        app.stop()
        raise
    return app


@pytest.fixture(scope="module")
def outcomes_producer(kafka_bootstrap: str, logs: Path) -> Iterator[tuple[AppProcess, str]]:
    topic = f"kw-outcomes-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topics(kafka_bootstrap, {topic: 3}))
    app = _start_producer(_producer_env(kafka_bootstrap, topic), logs)
    try:
        yield app, topic
    finally:
        app.stop()


@pytest.fixture(scope="module", params=CODECS)
def codec_producer(
    request: pytest.FixtureRequest, kafka_bootstrap: str, logs: Path
) -> Iterator[tuple[AppProcess, str, str]]:
    """One producer process per codec, each writing to its own one-partition topic."""
    codec: str = request.param
    topic = f"kw-codec-{codec}-{uuid.uuid4().hex[:6]}"
    asyncio.run(_create_topics(kafka_bootstrap, {topic: 1}))
    env = _producer_env(kafka_bootstrap, topic, KRAFTWERK_COMPRESSION_TYPE=codec)
    app = _start_producer(env, logs)
    try:
        yield app, topic, codec
    finally:
        app.stop()


async def read_all(bootstrap: str, topic: str, partitions: int) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning up to the current end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            records: list[ConsumerRecord] = []
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                batches = await consumer.getmany(*tps, timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


def log_size(bootstrap: str, topic: str, partition: int = 0) -> int:
    """Bytes the broker stores for a partition (Kafka's own LogDirsCommand)."""
    result = subprocess.run(
        [
            _java(),
            "-cp",
            f"{ensure_libs()}/*",
            "org.apache.kafka.tools.LogDirsCommand",
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--topic-list",
            topic,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    sizes = [
        p["size"]
        for broker in data["brokers"]
        for log_dir in broker["logDirs"]
        for p in log_dir["partitions"]
        if p["partition"] == f"{topic}-{partition}"
    ]
    assert sizes, result.stdout
    return int(max(sizes))


def _header(record: ConsumerRecord, name: str) -> bytes | None:
    return next((v for k, v in record.headers if k == name), None)


async def test_codec_roundtrip(
    codec_producer: tuple[AppProcess, str, str], kafka_bootstrap: str
) -> None:
    app, topic, codec = codec_producer
    marker = uuid.uuid4().hex
    body = {
        "messages": [
            {"value": {"codec": codec, "i": i, "marker": marker, "blob": BLOB}}
            for i in range(BATCH)
        ]
    }
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        resp = await http.post("/send/batch", json=body, headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert [r["status"] for r in resp.json()["results"]] == ["ok"] * BATCH
        single = await http.post(
            "/send",
            json={"codec": codec, "single": True, "marker": marker},
            headers={**AUTH, "X-Kafka-Header-Codec": codec},
        )
        assert single.status_code == 200, single.text

    records = await read_all(kafka_bootstrap, topic, 1)
    values = [json.loads(r.value) for r in records]
    mine = [v for v in values if v.get("marker") == marker]
    assert [v.get("i") for v in mine] == [0, 1, 2, None]
    assert all(v["blob"] == BLOB for v in mine[:BATCH])
    assert _header(records[-1], "codec") == codec.encode()

    # The broker keeps the producer's compression (compression.type=producer): the stored
    # size shows whether the batch was really compressed.
    size = log_size(kafka_bootstrap, topic)
    raw = BATCH * len(BLOB)
    if codec == "none":
        assert size > raw, size
    else:
        assert size < raw // 4, (codec, size)


async def test_idempotent_retry_same_offset_written_once(
    outcomes_producer: tuple[AppProcess, str], kafka_bootstrap: str
) -> None:
    app, topic = outcomes_producer
    key = f"order-{uuid.uuid4().hex}"
    headers = {**AUTH, "Idempotency-Key": key}
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        first = await http.post("/send", json={"order": key}, headers=headers)
        assert first.status_code == 200, first.text
        assert "Idempotent-Replayed" not in first.headers
        retry = await http.post("/send", json={"order": key}, headers=headers)
        assert retry.status_code == 200, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json() == first.json()
        reused = await http.post("/send", json={"order": "other"}, headers=headers)
        assert reused.status_code == 422
        assert reused.json()["error"] == "idempotency_key_reused"

    ack = first.json()
    assert ack["key"] == key
    records = [r for r in await read_all(kafka_bootstrap, topic, 3) if r.key == key.encode()]
    assert len(records) == 1
    record = records[0]
    assert (record.partition, record.offset) == (ack["partition"], ack["offset"])
    assert _header(record, "idempotency-key") == key.encode()


async def test_idempotent_batch_retry(
    outcomes_producer: tuple[AppProcess, str], kafka_bootstrap: str
) -> None:
    app, topic = outcomes_producer
    base = f"batch-{uuid.uuid4().hex}"
    body = {"messages": [{"value": {"n": n, "base": base}} for n in range(3)]}
    headers = {**AUTH, "Idempotency-Key": base}
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        first = await http.post("/send/batch", json=body, headers=headers)
        assert first.status_code == 200, first.text
        retry = await http.post("/send/batch", json=body, headers=headers)
        assert retry.status_code == 200, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
    placed = [(r["partition"], r["offset"]) for r in first.json()["results"]]
    assert [(r["partition"], r["offset"]) for r in retry.json()["results"]] == placed

    records = [
        r
        for r in await read_all(kafka_bootstrap, topic, 3)
        if (_header(r, "idempotency-key") or b"").startswith(base.encode())
    ]
    assert sorted((r.partition, r.offset) for r in records) == sorted(placed)
    assert sorted(_header(r, "idempotency-key") or b"" for r in records) == [
        f"{base}:{n}".encode() for n in range(3)
    ]


async def test_batch_places_records_like_single_sends(
    outcomes_producer: tuple[AppProcess, str], kafka_bootstrap: str
) -> None:
    """A batch goes to Kafka as one record batch per partition: each keyed message still lands
    on its key's partition (the one /send uses), the keyless ones share one partition, and
    every result names the record's own offset and timestamp."""
    app, topic = outcomes_producer
    run = uuid.uuid4().hex
    keys = [f"{run}-{i}" for i in range(12)]
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        single = {}
        for key in keys:
            resp = await http.post("/send", params={"key": key}, json={"one": key}, headers=AUTH)
            assert resp.status_code == 200, resp.text
            single[key] = resp.json()["partition"]
        messages: list[dict[str, Any]] = [
            {"value": {"n": n, "run": run}, "key": key} for n, key in enumerate(keys)
        ]
        messages += [{"value": {"n": 100 + n, "run": run}} for n in range(5)]
        resp = await http.post("/send/batch", json={"messages": messages}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["partition"] for r in results[:12]] == [single[key] for key in keys]
    assert len({r["partition"] for r in results[12:]}) == 1
    assert len({(r["partition"], r["offset"]) for r in results}) == len(messages)
    assert all(isinstance(r["timestamp"], int) and r["timestamp"] > 0 for r in results)

    records = {(r.partition, r.offset): r for r in await read_all(kafka_bootstrap, topic, 3)}
    for n, result in enumerate(results):
        record = records[(result["partition"], result["offset"])]
        assert json.loads(record.value) == messages[n]["value"]
        assert record.key == (keys[n].encode() if n < 12 else None)
        assert record.timestamp == result["timestamp"]


async def test_utf8_header_roundtrip(
    outcomes_producer: tuple[AppProcess, str], kafka_bootstrap: str
) -> None:
    app, topic = outcomes_producer
    marker = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        # raw UTF-8 bytes on the wire, as a browser or curl sends them
        resp = await http.post(
            "/send",
            json={"marker": marker, "city": "Zürich"},
            headers=[*RAW_AUTH, (b"X-Kafka-Header-City", "Zürich".encode())],
        )
        assert resp.status_code == 200, resp.text
        batch = await http.post(
            "/send/batch",
            json={"messages": [{"value": {"marker": marker}, "headers": {"städte": "Zürich"}}]},
            headers=AUTH,
        )
        assert batch.status_code == 200, batch.text
        latin1 = await http.post(
            "/send",
            json={"marker": marker},
            headers=[*RAW_AUTH, (b"X-Kafka-Header-City", "Zürich".encode("latin-1"))],
        )
        assert latin1.status_code == 422
        assert latin1.json()["error"] == "invalid_unicode"

    records = [
        r for r in await read_all(kafka_bootstrap, topic, 3) if marker.encode() in (r.value or b"")
    ]
    assert len(records) == 2
    [single] = [r for r in records if _header(r, "city") is not None]
    assert _header(single, "city") == "Zürich".encode()
    assert json.loads(single.value)["city"] == "Zürich"
    [from_batch] = [r for r in records if _header(r, "städte") is not None]
    assert _header(from_batch, "städte") == "Zürich".encode()


async def test_lone_surrogate_is_422(outcomes_producer: tuple[AppProcess, str]) -> None:
    app, _ = outcomes_producer
    json_headers = {**AUTH, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        resp = await http.post("/send", content=b'{"a": "\\ud800"}', headers=json_headers)
        assert resp.status_code == 422
        assert resp.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = resp.json()
        assert body["error"] == "invalid_unicode"
        assert body["errors"][0]["loc"] == ["body", "a"]
        batch = await http.post(
            "/send/batch",
            content=b'{"messages": [{"value": {}, "key": "\\udc00"}]}',
            headers=json_headers,
        )
        assert batch.status_code == 422
        assert batch.json()["error"] == "invalid_unicode"


def test_topic_missing_is_certain_503(kafka_bootstrap: str, logs: Path) -> None:
    """aiokafka still waits for metadata at the deadline: abandoned, so certainly not written."""
    env = _producer_env(
        kafka_bootstrap,
        f"missing-{uuid.uuid4().hex[:6]}",
        KRAFTWERK_REQUEST_DEADLINE_SECONDS="2",
        KRAFTWERK_RETRY_AFTER_SECONDS="7",
    )
    app = _start_producer(env, logs)
    try:
        resp = httpx.post(
            f"{app.url}/send",
            json={"a": 1},
            headers={**AUTH, "Idempotency-Key": "missing-1"},
            timeout=30,
        )
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"] == "kafka_timeout"
        assert resp.headers["Retry-After"] == "7"
    finally:
        app.stop()
