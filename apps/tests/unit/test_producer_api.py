from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from pydantic import ValidationError

from kraftwerk_apps.producer.app import create_app
from kraftwerk_apps.producer.auth import key_matches
from kraftwerk_apps.producer.gateway import Delivery, KafkaSender, check_codec
from kraftwerk_apps.producer.headers import kafka_headers
from kraftwerk_apps.producer.idempotency import Entry, KeyReusedError, ReplayCache, fingerprint
from kraftwerk_apps.producer.settings import ProducerSettings
from tests.unit.fakes import FakeSender

KEY = {"X-API-Key": "good-key"}


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
def settings() -> ProducerSettings:
    return ProducerSettings(
        api_keys="other-key,good-key",
        request_deadline_seconds=0.5,
        max_body_bytes=200,
        batch_max_size=3,
    )


@pytest.fixture
def client(settings: ProducerSettings, sender: FakeSender) -> Iterator[TestClient]:
    with TestClient(create_app(settings, sender)) as c:
        yield c


def test_send_ok(client: TestClient, sender: FakeSender) -> None:
    resp = client.post("/send", json={"key": "Hello Kafka!"}, headers=KEY)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["topic"] == "test-topic"
    assert body["offset"] == 0
    assert body["status"] == "ok"
    assert json.loads(sender.sent[0].value) == {"key": "Hello Kafka!"}
    assert sender.sent[0].key is None


def test_send_key_and_headers(client: TestClient, sender: FakeSender) -> None:
    resp = client.post(
        "/send?key=user-1",
        json={"a": 1},
        headers={**KEY, "X-Kafka-Header-Trace-Id": "abc", "X-Other": "x"},
    )
    assert resp.status_code == 200
    assert resp.json()["key"] == "user-1"
    assert sender.sent[0].key == b"user-1"
    assert sender.sent[0].headers == [("trace-id", b"abc")]


def test_kafka_headers_helper() -> None:
    raw = [(b"x-kafka-header-a", b"1"), (b"x-kafka-header-", b"2"), (b"b", b"3")]
    assert kafka_headers(raw) == [("a", b"1")]


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [({}, 401, "unauthorized"), ({"X-API-Key": "nope"}, 403, "forbidden")],
)
def test_auth(client: TestClient, headers: dict[str, str], status: int, error: str) -> None:
    resp = client.post("/send", json={"a": 1}, headers=headers)
    assert resp.status_code == status
    assert resp.json()["error"] == error


def test_no_keys_configured_rejects(sender: FakeSender) -> None:
    with TestClient(create_app(ProducerSettings(api_keys=[]), sender)) as c:
        assert c.post("/send", json={}, headers={"X-API-Key": "x"}).status_code == 403


def test_key_matches() -> None:
    assert key_matches(b"b", [b"a", b"b"])
    assert not key_matches(b"c", [b"a", b"b"])
    assert not key_matches(b"a", [])


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_422(client: TestClient, content: bytes, error: str) -> None:
    resp = client.post(
        "/send", content=content, headers={**KEY, "Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == error
    assert resp.json()["detail"]


def test_413_content_length(client: TestClient) -> None:
    resp = client.post("/send", json={"x": "y" * 500}, headers=KEY)
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"


def test_413_chunked_without_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"x": "'
        for _ in range(10):
            yield b"y" * 50
        yield b'"}'

    resp = client.post("/send", content=chunks(), headers=KEY)
    assert resp.status_code == 413


async def _asgi_post(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, dict[str, Any]]:
    """Drive the ASGI app directly so that Content-Length can lie."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


async def test_413_lying_content_length(settings: ProducerSettings, sender: FakeSender) -> None:
    app = create_app(settings, sender)
    headers = [(b"x-api-key", b"good-key"), (b"content-length", b"10")]
    status, body = await _asgi_post(app, "/send", headers, [b'{"x":"', b"y" * 300, b'"}'])
    assert status == 413
    assert body["error"] == "payload_too_large"
    assert sender.sent == []


def test_deadline_without_ack_is_504_unknown(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "hang"
    started = time.monotonic()
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code == 504
    assert resp.json()["error"] == "outcome_unknown"
    assert "Idempotency-Key" in resp.json()["detail"]
    assert "Retry-After" not in resp.headers
    assert time.monotonic() - started < 2.0
    assert len(sender.sent) == 1  # enqueued: may still be written


def test_deadline_before_enqueue_is_503(client: TestClient, sender: FakeSender) -> None:
    """aiokafka still waiting for metadata/buffer at the deadline: abandoned, not written."""
    sender.mode = "stall"
    started = time.monotonic()
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code == 503
    assert resp.json()["error"] == "kafka_timeout"
    assert resp.headers["Retry-After"] == "2"
    assert time.monotonic() - started < 2.0
    assert sender.sent == []


def test_not_connected_503(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "down"
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code == 503
    assert resp.json()["error"] == "kafka_unavailable"
    assert resp.headers["Retry-After"] == "2"


def test_batch_ok(client: TestClient, sender: FakeSender) -> None:
    body: dict[str, Any] = {
        "messages": [{"value": {"i": 0}, "key": "k"}, {"value": {"i": 1}, "headers": {"h": "v"}}]
    }
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["count"] == 2
    assert [r["offset"] for r in data["results"]] == [0, 1]
    assert data["results"][0]["key"] == "k"
    assert sender.sent[1].headers == [("h", b"v")]


def test_batch_too_many(client: TestClient) -> None:
    body: dict[str, Any] = {"messages": [{"value": {}}] * 4}
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 413
    assert resp.json()["error"] == "batch_too_large"


@pytest.mark.parametrize(
    "body",
    [{"messages": []}, {"messages": [{"value": [1]}]}, {"messages": [{"value": {}, "x": 1}]}, [1]],
)
def test_batch_422(client: TestClient, body: Any) -> None:
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_batch"


def test_batch_partial_failure(client: TestClient, sender: FakeSender) -> None:
    sender.plan = ["ok", ("raise", KafkaTimeoutError())]
    body = {"messages": [{"value": {"i": 0}}, {"value": {"i": 1}}]}
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "2"
    data = resp.json()
    assert (data["status"], data["error"], data["count"]) == ("failed", "send_failed", 2)
    assert data["detail"]
    results = data["results"]
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert results[0]["offset"] == 0
    assert results[1]["error"] == "kafka_unavailable"


def test_health_ready_metrics_docs(client: TestClient, sender: FakeSender) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "reason": None}
    assert client.get("/readyz").status_code == 200
    sender.ready_reason = "kafka unreachable"
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "reason": "kafka unreachable"}
    client.post("/send", json={"a": 1}, headers=KEY)
    metrics = client.get("/metrics").text
    assert "kraftwerk_http_requests_total" in metrics
    assert "kraftwerk_producer_messages_total" in metrics
    spec = client.get("/openapi.json").json()
    send = spec["paths"]["/send"]["post"]
    assert {p["name"] for p in send["parameters"]} >= {"key", "x-api-key"}
    assert send["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    assert "/send/batch" in spec["paths"]
    assert client.get("/docs").status_code == 200


# --- compression ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("none", None),
        ("NONE", None),
        ("gzip", "gzip"),
        ("Snappy", "snappy"),
        ("lz4", "lz4"),
        (" zstd ", "zstd"),
    ],
)
def test_compression_type_setting(raw: str | None, expected: str | None) -> None:
    assert ProducerSettings(compression_type=raw).compression_type == expected


def test_compression_type_env_and_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_COMPRESSION_TYPE", "lz4")
    assert ProducerSettings().compression_type == "lz4"
    monkeypatch.setenv("KRAFTWERK_COMPRESSION_TYPE", "none")
    assert ProducerSettings().compression_type is None
    monkeypatch.setenv("KRAFTWERK_COMPRESSION_TYPE", "brotli")
    with pytest.raises(ValidationError):
        ProducerSettings()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_every_codec_builds_a_producer(codec: str) -> None:
    check_codec(codec)  # the cramjam-backed codecs are installed
    sender = KafkaSender(ProducerSettings(compression_type=codec))
    producer = sender._build()
    try:
        assert producer._compression_type == codec
    finally:
        await producer.stop()


# --- outcomes of /send --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "status", "error"),
    [
        (("raise", KafkaTimeoutError()), 503, "kafka_unavailable"),  # not enqueued
        (("raise", ValueError("bad")), 503, "kafka_unavailable"),
        (("raise", MessageSizeTooLargeError()), 413, "message_too_large"),
        (MessageSizeTooLargeError(), 413, "message_too_large"),
        (RecordTooLargeError(), 413, "message_too_large"),
        (TopicAuthorizationFailedError(), 503, "kafka_rejected"),
        (InvalidTopicError(), 503, "kafka_rejected"),
        (KafkaTimeoutError(), 504, "outcome_unknown"),  # after enqueue
        (RequestTimedOutError(), 504, "outcome_unknown"),
        (NotLeaderForPartitionError(), 504, "outcome_unknown"),
        (KafkaConnectionError(), 504, "outcome_unknown"),
        (UnknownTopicOrPartitionError(), 504, "outcome_unknown"),
        (RuntimeError("?"), 504, "outcome_unknown"),
    ],
)
def test_send_outcomes(
    client: TestClient, sender: FakeSender, behaviour: Any, status: int, error: str
) -> None:
    sender.plan = [behaviour]
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == error
    assert body["detail"]
    assert ("Retry-After" in resp.headers) == (status == 503)
    if status == 504:
        assert "same Idempotency-Key" in body["detail"]


# --- Idempotency-Key -------------------------------------------------------------------------

IDEM = {**KEY, "Idempotency-Key": "order-4711"}


def test_idempotency_key_header_and_default_record_key(
    client: TestClient, sender: FakeSender
) -> None:
    resp = client.post(
        "/send", json={"a": 1}, headers={**IDEM, "X-Kafka-Header-Idempotency-Key": "spoof"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["key"] == "order-4711"
    assert "Idempotent-Replayed" not in resp.headers
    msg = sender.sent[0]
    assert msg.key == b"order-4711"  # a retry lands on the same partition
    assert msg.headers == [("idempotency-key", b"order-4711")]


def test_explicit_record_key_wins(client: TestClient, sender: FakeSender) -> None:
    resp = client.post("/send?key=user-1", json={"a": 1}, headers=IDEM)
    assert resp.json()["key"] == "user-1"
    assert sender.sent[0].key == b"user-1"
    assert sender.sent[0].headers == [("idempotency-key", b"order-4711")]


@pytest.mark.parametrize("value", [b"", b"x" * 201, "Zürich".encode(), b"tab\there", b"del\x7f"])
def test_invalid_idempotency_key(client: TestClient, sender: FakeSender, value: bytes) -> None:
    resp = client.post("/send", json={"a": 1}, headers=[*KEY.items(), ("Idempotency-Key", value)])
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_idempotency_key"
    assert sender.sent == []


def test_idempotency_key_limits_accepted(client: TestClient) -> None:
    for i, value in enumerate(("x" * 200, "a b ~!", "0")):
        resp = client.post("/send", json={"i": i}, headers={**KEY, "Idempotency-Key": value})
        assert resp.status_code == 200, (value, resp.text)


def test_replay_after_ack(client: TestClient, sender: FakeSender) -> None:
    first = client.post("/send", json={"a": 1}, headers=IDEM)
    second = client.post("/send", content=b'{ "a" : 1 }', headers=IDEM)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(sender.sent) == 1


def test_same_key_different_request_is_422(client: TestClient, sender: FakeSender) -> None:
    assert client.post("/send", json={"a": 1}, headers=IDEM).status_code == 200
    for kwargs in (
        {"json": {"a": 2}, "headers": IDEM},
        {"json": {"a": 1}, "headers": {**IDEM, "X-Kafka-Header-H": "v"}},
        {"json": {"a": 1}, "headers": IDEM, "params": {"key": "other"}},
    ):
        resp = client.post("/send", **kwargs)
        assert resp.status_code == 422
        assert resp.json()["error"] == "idempotency_key_reused"
    assert len(sender.sent) == 1


def test_headers_order_does_not_change_fingerprint(client: TestClient, sender: FakeSender) -> None:
    a = [*IDEM.items(), ("X-Kafka-Header-A", "1"), ("X-Kafka-Header-B", "2")]
    b = [*IDEM.items(), ("X-Kafka-Header-B", "2"), ("X-Kafka-Header-A", "1")]
    assert client.post("/send", json={"a": 1}, headers=a).status_code == 200
    resp = client.post("/send", json={"a": 1}, headers=b)
    assert resp.status_code == 200
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert len(sender.sent) == 1


@pytest.mark.parametrize(
    "failure",
    [("raise", KafkaTimeoutError()), TopicAuthorizationFailedError(), RequestTimedOutError()],
)
def test_failed_send_is_sent_again(client: TestClient, sender: FakeSender, failure: Any) -> None:
    sender.plan = [failure]
    first = client.post("/send", json={"a": 1}, headers=IDEM)
    assert first.status_code in (503, 504)
    second = client.post("/send", json={"a": 1}, headers=IDEM)
    assert second.status_code == 200
    assert "Idempotent-Replayed" not in second.headers
    assert sender.sent[-1].headers == [("idempotency-key", b"order-4711")]


def test_not_connected_then_retry_sends(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "down"
    assert client.post("/send", json={"a": 1}, headers=IDEM).status_code == 503
    sender.mode = "ok"
    assert client.post("/send", json={"a": 1}, headers=IDEM).status_code == 200
    assert len(sender.sent) == 1


async def _async_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_retry_waits_for_in_flight_send(
    settings: ProducerSettings, sender: FakeSender
) -> None:
    app = create_app(settings, sender)
    async with await _async_client(app) as http:
        sender.mode = "hang"
        first = await http.post("/send", json={"a": 1}, headers=IDEM)
        assert first.status_code == 504  # deadline passed, record still in flight
        # The broker acknowledges while the retry is waiting for the in-flight send.
        asyncio.get_running_loop().call_later(0.1, sender.resolve_pending)
        second = await http.post("/send", json={"a": 1}, headers=IDEM)
        assert second.status_code == 200, second.text
        assert second.headers["Idempotent-Replayed"] == "true"
        assert second.json()["offset"] == 0
        third = await http.post("/send", json={"a": 1}, headers=IDEM)
        assert third.json() == second.json()
    assert len(sender.sent) == 1


async def test_concurrent_requests_with_one_key_send_once(
    settings: ProducerSettings, sender: FakeSender
) -> None:
    app = create_app(settings, sender)
    sender.mode = "hang"
    async with await _async_client(app) as http:
        tasks = [
            asyncio.create_task(http.post("/send", json={"a": 1}, headers=IDEM)) for _ in range(3)
        ]
        deadline = time.monotonic() + 5
        while not sender.pending:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        sender.resolve_pending()
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len({r.json()["offset"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 2
    assert len(sender.sent) == 1


def test_replay_cache_window_and_bound() -> None:
    now = [0.0]
    cache = ReplayCache(window_seconds=10, max_keys=2, timer=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        done: asyncio.Future[Delivery] = loop.create_future()
        done.set_result(Delivery("t", 0, 1, None))
        fp = fingerprint(b"{}", None, [])
        cache.remember("a", Entry(fp, done))
        assert cache.lookup("a", fp) is not None
        with pytest.raises(KeyReusedError):
            cache.lookup("a", fingerprint(b"{}", b"k", []))
        now[0] = 11.0  # window passed: forgotten, a different request may use the key
        assert cache.lookup("a", fingerprint(b"{}", b"k", [])) is None
        for key in ("x", "y", "z"):
            cache.remember(key, Entry(fp, done))
        assert len(cache) == 2
        assert cache.lookup("x", fp) is None  # evicted (bounded)
        failed: asyncio.Future[Delivery] = loop.create_future()
        failed.set_exception(KafkaTimeoutError())
        cache.remember("f", Entry(fp, failed))
        assert cache.lookup("f", fp) is None  # failed earlier: send again
    finally:
        loop.close()


def test_idempotency_settings_defaults() -> None:
    s = ProducerSettings()
    assert (s.idempotency_window_seconds, s.idempotency_max_keys) == (600.0, 100_000)
    assert s.retry_after_seconds == 2


# --- /send/batch -----------------------------------------------------------------------------


def test_batch_idempotency_keys(client: TestClient, sender: FakeSender) -> None:
    body = {
        "messages": [
            {"value": {"i": 0}},
            {"value": {"i": 1}, "idempotency_key": "own", "key": "k"},
        ]
    }
    resp = client.post("/send/batch", json=body, headers={**KEY, "Idempotency-Key": "b1"})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert "error" not in data
    assert [r["idempotency_key"] for r in data["results"]] == ["b1:0", "own"]
    assert [r["key"] for r in data["results"]] == ["b1:0", "k"]
    assert sender.sent[0].headers == [("idempotency-key", b"b1:0")]
    assert sender.sent[1].key == b"k"
    again = client.post("/send/batch", json=body, headers={**KEY, "Idempotency-Key": "b1"})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [r["offset"] for r in again.json()["results"]] == [0, 1]
    assert all(r["replayed"] for r in again.json()["results"])
    assert len(sender.sent) == 2


def test_batch_item_replays_single_send(client: TestClient, sender: FakeSender) -> None:
    single = client.post("/send", json={"i": 0}, headers=IDEM)
    body = {"messages": [{"value": {"i": 0}, "idempotency_key": "order-4711"}, {"value": {}}]}
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert results[0]["offset"] == single.json()["offset"]
    assert results[0]["replayed"] is True
    assert results[1]["replayed"] is False
    assert "Idempotent-Replayed" not in resp.headers
    assert len(sender.sent) == 2


def test_batch_duplicate_keys(client: TestClient, sender: FakeSender) -> None:
    same = {"messages": [{"value": {"i": 0}, "idempotency_key": "d"}] * 2}
    resp = client.post("/send/batch", json=same, headers=KEY)
    assert resp.status_code == 200
    assert [r["offset"] for r in resp.json()["results"]] == [0, 0]
    assert len(sender.sent) == 1
    differ = {
        "messages": [
            {"value": {"i": 0}, "idempotency_key": "e"},
            {"value": {"i": 1}, "idempotency_key": "e"},
        ]
    }
    resp = client.post("/send/batch", json=differ, headers=KEY)
    assert resp.status_code == 422
    assert resp.json()["error"] == "idempotency_key_reused"
    assert len(sender.sent) == 1  # nothing of the conflicting batch was sent


def test_batch_invalid_item_idempotency_key(client: TestClient) -> None:
    body = {"messages": [{"value": {}, "idempotency_key": ""}]}
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_batch"


def test_batch_unknown_keeps_acked_results(client: TestClient, sender: FakeSender) -> None:
    sender.plan = ["ok", "hang", ("raise", KafkaTimeoutError())]
    body = {"messages": [{"value": {"i": i}} for i in range(3)]}
    started = time.monotonic()
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert time.monotonic() - started < 2.0
    assert resp.status_code == 504
    assert "Retry-After" not in resp.headers
    data = resp.json()
    assert (data["status"], data["error"], data["count"]) == ("unknown", "outcome_unknown", 3)
    assert "1 of 3" in data["detail"]
    assert [r["status"] for r in data["results"]] == ["ok", "unknown", "failed"]
    assert data["results"][0]["offset"] == 0
    assert data["results"][1]["error"] == "outcome_unknown"


def test_batch_deadline_answers_per_message(client: TestClient, sender: FakeSender) -> None:
    sender.plan = ["ok", "stall"]
    body = {"messages": [{"value": {"i": i}} for i in range(3)]}
    resp = client.post("/send/batch", json=body, headers=KEY)
    # the 2nd is still waiting in aiokafka's send() at the deadline: abandoned (with the
    # 3rd, which never got there) -> certainly not written
    assert resp.status_code == 503
    data = resp.json()
    assert [r["status"] for r in data["results"]] == ["ok", "failed", "failed"]
    assert {r["error"] for r in data["results"][1:]} == {"kafka_timeout"}
    assert len(sender.sent) == 1


def test_batch_all_hang_is_504(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "hang"
    body = {"messages": [{"value": {"i": i}} for i in range(2)]}
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 504
    assert [r["status"] for r in resp.json()["results"]] == ["unknown", "unknown"]


def test_batch_not_connected(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "down"
    resp = client.post("/send/batch", json={"messages": [{"value": {}}]}, headers=KEY)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "2"
    data = resp.json()
    assert data["results"][0]["status"] == "failed"
    assert data["results"][0]["error"] == "kafka_unavailable"


# --- UTF-8 headers and lone surrogates -------------------------------------------------------


async def test_utf8_kafka_header_raw_bytes(settings: ProducerSettings, sender: FakeSender) -> None:
    """The server hands the raw header bytes over (as uvicorn does): no latin-1 mojibake."""
    app = create_app(settings, sender)
    headers = [(b"x-api-key", b"good-key"), (b"x-kafka-header-city", "Zürich".encode())]
    status, body = await _asgi_post(app, "/send", headers, [b'{"a": 1}'])
    assert status == 200, body
    assert sender.sent[0].headers == [("city", "Zürich".encode())]


async def test_non_utf8_kafka_header_is_422(settings: ProducerSettings, sender: FakeSender) -> None:
    app = create_app(settings, sender)
    headers = [(b"x-api-key", b"good-key"), (b"x-kafka-header-city", "Zürich".encode("latin-1"))]
    status, body = await _asgi_post(app, "/send", headers, [b'{"a": 1}'])
    assert status == 422
    assert body["error"] == "invalid_unicode"
    assert sender.sent == []


def test_batch_header_utf8(client: TestClient, sender: FakeSender) -> None:
    body = {"messages": [{"value": {}, "headers": {"city": "Zürich", "städte": "x"}}]}
    assert client.post("/send/batch", json=body, headers=KEY).status_code == 200
    assert sender.sent[0].headers == [("city", "Zürich".encode()), ("städte", b"x")]


@pytest.mark.parametrize(
    ("content", "loc"),
    [
        (b'{"a": "\\ud800"}', ["body", "a"]),
        (b'{"a": ["ok", {"b": "x\\udfff"}]}', ["body", "a", 1, "b"]),
        (b'{"\\ud800": 1}', ["body", "'\\ud800'"]),
        (b'{"a": "\xed\xa0\x80"}', ["body", "a"]),  # CESU-8 surrogate bytes
    ],
)
def test_lone_surrogate_send_422(
    client: TestClient, sender: FakeSender, content: bytes, loc: list[Any]
) -> None:
    resp = client.post(
        "/send", content=content, headers={**KEY, "Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_unicode"
    assert "surrogate" in body["detail"]
    assert body["errors"][0]["loc"] == loc
    assert sender.sent == []


@pytest.mark.parametrize(
    "message",
    [
        '{"value": {"a": "\\ud800"}}',
        '{"value": {}, "key": "\\udc00"}',
        '{"value": {}, "headers": {"h": "\\ud800"}}',
        '{"value": {}, "headers": {"\\ud800": "v"}}',
    ],
)
def test_lone_surrogate_batch_422(client: TestClient, sender: FakeSender, message: str) -> None:
    content = ('{"messages": [{"value": {}}, ' + message + "]}").encode()
    resp = client.post(
        "/send/batch", content=content, headers={**KEY, "Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_unicode"
    assert resp.json()["errors"][0]["loc"][:3] == ["body", "messages", 1]
    assert sender.sent == []


# --- OpenAPI ----------------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for raw_part in ref[2:].split("/"):
        part = raw_part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def test_openapi_valid_and_refs_resolve(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    validate(doc)
    refs = set(_refs(doc))
    assert "#/components/schemas/BatchRequest" in refs
    assert "#/components/schemas/BatchMessage" in refs
    for ref in refs:
        _resolve(doc, ref)
    send = doc["paths"]["/send"]["post"]
    batch = doc["paths"]["/send/batch"]["post"]
    assert set(send["responses"]) == {"200", "400", "401", "403", "413", "422", "503", "504"}
    assert set(batch["responses"]) == {"200", "400", "401", "403", "413", "422", "503", "504"}
    assert "Retry-After" in send["responses"]["503"]["headers"]
    assert "Idempotent-Replayed" in send["responses"]["200"]["headers"]
    for code in ("200", "503", "504"):
        schema = batch["responses"][code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/BatchResult"}
    for op in (send, batch):
        names = {p["name"] for p in op["parameters"]}
        assert {"Idempotency-Key", "x-api-key"} <= names
    message = _resolve(doc, "#/components/schemas/BatchMessage")
    assert "idempotency_key" in message["properties"]


def test_a_dead_connect_task_makes_readyz_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer's background connect task runs under the supervisor: its death is fatal."""
    from kraftwerk_apps.common import lifecycle  # noqa: PLC0415
    from kraftwerk_apps.producer import gateway  # noqa: PLC0415

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("connect logic bug")

    monkeypatch.setattr(gateway, "start_with_retry", broken)
    lifecycle.reset()
    settings = ProducerSettings(api_keys="good-key", fatal_exit_delay_seconds=60)
    try:
        with TestClient(create_app(settings)) as c:
            deadline = time.monotonic() + 10
            while (resp := c.get("/readyz")).status_code != 503 or "fatal" not in resp.text:
                assert time.monotonic() < deadline, resp.text
                time.sleep(0.05)
            assert "connect logic bug" in resp.json()["reason"]
    finally:
        lifecycle.reset()


# --- the hand-checked batch fast path ------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        [{"value": {"a": 1}}],
        [{"value": {}, "key": None, "headers": {}, "idempotency_key": None}],
        [{"value": {"a": [1, {"b": None}]}, "key": "k" * 1024, "headers": {"h": "v"}}],
        [{"value": {}, "idempotency_key": "x" * 200}, {"value": {"n": 2}, "key": ""}],
        [],
        [{"value": {}, "key": "k" * 1025}],
        [{"value": {}, "key": 1}],
        [{"value": []}],
        [{"value": None}],
        [{"key": "k"}],
        [{"value": {}, "headers": None}],
        [{"value": {}, "headers": {"h": 1}}],
        [{"value": {}, "headers": []}],
        [{"value": {}, "idempotency_key": ""}],
        [{"value": {}, "idempotency_key": "é"}],
        [{"value": {}, "idempotency_key": "x" * 201}],
        [{"value": {}, "idempotency_key": 5}],
        [{"value": {}, "extra": 1}],
        ["not an object"],
    ],
)
def test_plain_batch_check_agrees_with_the_model(messages: list[Any]) -> None:
    """The hand check accepts only what BatchRequest accepts, with the same content."""
    from kraftwerk_apps.producer.routes import _plain_messages  # noqa: PLC0415
    from kraftwerk_apps.producer.schemas import BatchRequest  # noqa: PLC0415

    body = {"messages": messages}
    plain = _plain_messages(body)
    try:
        model = BatchRequest.model_validate(body)
    except ValidationError:
        assert plain is None
        return
    if plain is not None:
        defaults: dict[str, Any] = {"key": None, "headers": {}, "idempotency_key": None}
        assert [{**defaults, **m} for m in plain] == [m.model_dump() for m in model.messages]
    assert _plain_messages({**body, "other": 1}) is None
