"""End-to-end tests against a real Kafka 3.9.1 (no mocks)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.integration.conftest import API_KEY
from tests.procs import AppProcess, eventually, start_app

AUTH = {"X-API-Key": API_KEY}


def send(producer: AppProcess, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{producer.url}/send", json=body, timeout=30, **kwargs)


def messages(app: AppProcess) -> dict[str, Any]:
    resp = httpx.get(f"{app.url}/messages", timeout=10)
    assert resp.status_code == 200
    data: dict[str, Any] = resp.json()
    return data


def test_ready(producer: AppProcess, consumers: list[AppProcess]) -> None:
    for app in (producer, *consumers):
        assert httpx.get(f"{app.url}/readyz").json()["status"] == "ready"
        assert httpx.get(f"{app.url}/healthz").status_code == 200


def test_send_then_visible_on_every_consumer(
    producer: AppProcess, consumers: list[AppProcess]
) -> None:
    marker = uuid.uuid4().hex
    resp = send(producer, {"key": "Hello Kafka!", "marker": marker}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    ack = resp.json()
    assert ack["topic"] == producer.env["KRAFTWERK_TOPIC"]
    assert ack["offset"] >= 0
    assert ack["partition"] in (0, 1, 2)

    for app in consumers:

        def found(app: AppProcess = app) -> dict[str, Any] | None:
            for m in messages(app)["messages"]:
                if m["value"] == {"key": "Hello Kafka!", "marker": marker}:
                    return dict(m)
            return None

        m = eventually(found, what=f"message on {app.url}")
        assert (m["partition"], m["offset"]) == (ack["partition"], ack["offset"])

    # Both instances show the same list, whichever partitions they own.
    def same() -> bool:
        a, b = (messages(app) for app in consumers)
        return bool(a["messages"] == b["messages"] and a["messages"])

    eventually(same, what="identical message lists")

    # Ready means "joined", but a rebalance may still follow, and each page shows the
    # assignment as of its last stats refresh: wait (with a deadline) until the assignments
    # are disjoint, cover every partition and each member owns some (3 partitions, 2
    # members), never assume that a rebalance has finished.
    def settled() -> list[set[int]] | None:
        owned = [
            {p["partition"] for p in messages(app)["partitions"] if p["assigned_here"]}
            for app in consumers
        ]
        disjoint = not owned[0] & owned[1]
        covering = owned[0] | owned[1] == {0, 1, 2}
        return owned if disjoint and covering and all(owned) else None

    eventually(settled, timeout=60, what="disjoint assignments covering all partitions")


def test_history_is_bounded_and_newest_first(
    producer: AppProcess, consumers: list[AppProcess]
) -> None:
    # One key -> one partition: Kafka only orders within a partition, and a batch shares
    # (almost) one timestamp, so only then is "newest first" well defined by seq.
    body = {"messages": [{"value": {"seq": i}, "key": "hist"} for i in range(15)]}
    resp = httpx.post(f"{producer.url}/send/batch", json=body, headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text

    def latest(app: AppProcess) -> list[Any] | None:
        msgs = messages(app)["messages"]
        seqs = [m["value"].get("seq") for m in msgs if m["value"]]
        return seqs if seqs[:1] == [14] else None

    for app in consumers:
        seqs = eventually(partial(latest, app), what="latest batch")
        assert len(messages(app)["messages"]) == 10
        assert seqs == list(range(14, 4, -1))


def test_same_key_same_partition(producer: AppProcess) -> None:
    acks = []
    for i in range(6):
        resp = send(producer, {"i": i}, params={"key": "user-42"}, headers=AUTH)
        assert resp.status_code == 200, resp.text
        acks.append(resp.json())
    assert len({a["partition"] for a in acks}) == 1
    offsets = [a["offset"] for a in acks]
    assert offsets == sorted(offsets)
    assert all(a["key"] == "user-42" for a in acks)


def test_batch_results(producer: AppProcess) -> None:
    body = {
        "messages": [
            {"value": {"n": 1}, "key": "a"},
            {"value": {"n": 2}, "key": "a"},
            {"value": {"n": 3}, "headers": {"source": "batch"}},
        ]
    }
    resp = httpx.post(f"{producer.url}/send/batch", json=body, headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["ok", "ok", "ok"]
    assert results[0]["partition"] == results[1]["partition"]
    assert results[1]["offset"] > results[0]["offset"]


def test_headers_and_key_reach_kafka(producer: AppProcess, consumers: list[AppProcess]) -> None:
    marker = uuid.uuid4().hex
    resp = send(
        producer,
        {"marker": marker},
        params={"key": "hdr"},
        headers={**AUTH, "X-Kafka-Header-Trace-Id": marker},
    )
    assert resp.status_code == 200

    def found() -> dict[str, Any] | None:
        for m in messages(consumers[0])["messages"]:
            if m["value"] == {"marker": marker}:
                return dict(m)
        return None

    m = eventually(found, what="message with headers")
    assert m["key"] == "hdr"
    assert {"name": "trace-id", "value": marker, "encoding": "utf-8"} in m["headers"]


def test_auth_and_validation_live(producer: AppProcess) -> None:
    assert send(producer, {"a": 1}).status_code == 401
    assert send(producer, {"a": 1}, headers={"X-API-Key": "bad"}).status_code == 403
    bad = httpx.post(f"{producer.url}/send", content=b"{oops", headers=AUTH)
    assert bad.status_code == 422
    big = send(producer, {"x": "y" * 1_100_000}, headers=AUTH)
    assert big.status_code == 413


async def _dlq_record(bootstrap: str, dlq: str, source_offset: int, wait_s: float) -> Any:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(dlq, 0)])
        await consumer.seek_to_beginning(TopicPartition(dlq, 0))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if dict(r.headers).get("dlq.source.offset") == str(source_offset).encode():
                        return r
        return None
    finally:
        await consumer.stop()


async def _produce_raw(bootstrap: str, topic: str, value: bytes) -> tuple[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        md = await producer.send_and_wait(topic, value=value, partition=0)
        return md.partition, md.offset
    finally:
        await producer.stop()


def test_poison_message_goes_to_dlq_and_consumption_continues(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    producer: AppProcess,
    consumers: list[AppProcess],
) -> None:
    topic, dlq = topics
    partition, offset = asyncio.run(_produce_raw(kafka_bootstrap, topic, b"this is not json"))
    record = asyncio.run(_dlq_record(kafka_bootstrap, dlq, offset, wait_s=40))
    assert record is not None, "poison message not found in the DLQ"
    headers = {k: v.decode() for k, v in record.headers}
    assert record.value == b"this is not json"
    assert headers["dlq.source.topic"] == topic
    assert headers["dlq.source.partition"] == str(partition)
    assert headers["dlq.attempts"] == "1"  # permanent error: no retries
    assert "not valid JSON" in headers["dlq.reason"]

    # Consumption continues: a good message behind it on the same partition gets committed.
    good = asyncio.run(_produce_raw(kafka_bootstrap, topic, b'{"after": "poison"}'))

    def committed_past() -> bool:
        rows = {p["partition"]: p for p in messages(consumers[0])["partitions"]}
        return (rows[0]["committed"] or 0) > good[1]

    eventually(committed_past, timeout=40, what="group committed past the poison message")


def test_lag_reaches_zero(producer: AppProcess, consumers: list[AppProcess]) -> None:
    for i in range(5):
        assert send(producer, {"lag": i}, headers=AUTH).status_code == 200

    def caught_up() -> bool:
        data = messages(consumers[0])
        rows = data["partitions"]
        return (
            len(rows) == 3
            and data["total_lag"] == 0
            and all(r["committed"] == r["end_offset"] for r in rows if r["end_offset"])
        )

    eventually(caught_up, timeout=40, what="lag 0")


def test_sse_stream(producer: AppProcess, consumers: list[AppProcess]) -> None:
    app = consumers[1]
    marker = uuid.uuid4().hex
    with httpx.stream("GET", f"{app.url}/events", timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-accel-buffering"] == "no"
        lines = resp.iter_lines()
        sent = False
        deadline = time.monotonic() + 30
        for line in lines:
            if line.startswith("data: ") and not sent:
                assert send(producer, {"sse": marker}, headers=AUTH).status_code == 200
                sent = True
                continue
            if line.startswith("data: ") and marker in line:
                snap = json.loads(line[6:])
                assert snap["messages"][0]["value"] == {"sse": marker}
                break
            assert time.monotonic() < deadline, "no SSE event with the new message"
    page = httpx.get(f"{app.url}/").text
    assert "EventSource" in page


def test_sse_keepalive(consumers: list[AppProcess]) -> None:
    with httpx.stream("GET", f"{consumers[0].url}/events", timeout=30) as resp:
        deadline = time.monotonic() + 15
        for line in resp.iter_lines():
            if line.startswith(": keep-alive"):
                return
            assert time.monotonic() < deadline
    raise AssertionError("no keep-alive comment")


def test_kafka_unreachable_gives_503_within_deadline(closed_port: int, logs: Path) -> None:
    env = {
        "KRAFTWERK_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}",
        "KRAFTWERK_API_KEYS": API_KEY,
        "KRAFTWERK_REQUEST_DEADLINE_SECONDS": "2",
        "KRAFTWERK_CONNECT_BACKOFF_SECONDS": "0.2",
    }
    app = start_app("producer", env, logs)
    try:
        app.wait_http("/healthz", 200)
        ready = httpx.get(f"{app.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"]
        started = time.monotonic()
        resp = send(app, {"a": 1}, headers=AUTH)
        assert resp.status_code == 503
        assert resp.json()["error"].startswith("kafka_")
        assert time.monotonic() - started < 3
    finally:
        app.stop()


def test_broker_never_acks_gives_503_within_deadline(kafka_bootstrap: str, logs: Path) -> None:
    """Connected producer, but the topic does not exist: the deadline must cut the wait."""
    env = {
        "KRAFTWERK_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KRAFTWERK_TOPIC": f"missing-{uuid.uuid4().hex[:6]}",
        "KRAFTWERK_API_KEYS": API_KEY,
        "KRAFTWERK_REQUEST_DEADLINE_SECONDS": "2",
    }
    app = start_app("producer", env, logs)
    try:
        app.wait_http("/readyz", 200)
        started = time.monotonic()
        resp = send(app, {"a": 1}, headers=AUTH)
        elapsed = time.monotonic() - started
        assert resp.status_code == 503
        assert resp.json()["error"] == "kafka_timeout"
        assert 1.5 < elapsed < 3.5
    finally:
        app.stop()
