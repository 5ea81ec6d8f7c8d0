from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kraftwerk_apps.producer.app import create_app, kafka_headers
from kraftwerk_apps.producer.auth import key_matches
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
    assert kafka_headers({"x-kafka-header-a": "1", "x-kafka-header-": "2", "b": "3"}) == [
        ("a", b"1")
    ]


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


def test_deadline_503(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "hang"
    started = time.monotonic()
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code == 503
    assert resp.json()["error"] == "kafka_timeout"
    assert time.monotonic() - started < 2.0


def test_not_connected_503(client: TestClient, sender: FakeSender) -> None:
    sender.mode = "down"
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code == 503
    assert resp.json()["error"] == "kafka_unavailable"


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
    sender.mode = "fail-second"
    body = {"messages": [{"value": {"i": 0}}, {"value": {"i": 1}}]}
    resp = client.post("/send/batch", json=body, headers=KEY)
    assert resp.status_code == 503
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert results[0]["offset"] == 0


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
