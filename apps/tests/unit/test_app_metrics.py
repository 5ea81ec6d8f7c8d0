"""The apps' own metrics (issue 10): produce errors by kind, consumer failures, lag labels."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RecordListTooLargeError,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest

from kraftwerk_apps.consumer.dashboard import Dashboard
from kraftwerk_apps.consumer.dlq import DlqWriter
from kraftwerk_apps.consumer.events import Broadcaster
from kraftwerk_apps.consumer.processing import GroupWorker
from kraftwerk_apps.consumer.records import decode_json_object
from kraftwerk_apps.consumer.settings import ConsumerSettings
from kraftwerk_apps.producer import outcomes
from kraftwerk_apps.producer.app import create_app
from kraftwerk_apps.producer.gateway import (
    EnqueueDeadlineError,
    NotConnectedError,
    NotWrittenError,
)
from kraftwerk_apps.producer.metrics import ERROR_KINDS
from kraftwerk_apps.producer.settings import ProducerSettings
from tests.unit.fakes import FakeSender

KEY = {"X-API-Key": "good-key"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def producer_errors() -> dict[str, float]:
    return {k: sample("kraftwerk_producer_errors_total", kind=k) for k in ERROR_KINDS}


# --- producer: kraftwerk_producer_errors_total{kind} ---------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (MessageSizeTooLargeError(), "too_large"),
        (RecordListTooLargeError(), "too_large"),
        (NotWrittenError("not enqueued", MessageSizeTooLargeError()), "too_large"),
        (NotEnoughReplicasError(), "not_enough_replicas"),
        (NotEnoughReplicasAfterAppendError(), "not_enough_replicas"),
        (TopicAuthorizationFailedError(), "auth"),
        (ClusterAuthorizationFailedError(), "auth"),
        (SaslAuthenticationFailed(), "auth"),
        (KafkaTimeoutError(), "timeout"),
        (RequestTimedOutError(), "timeout"),
        (TimeoutError(), "timeout"),
        (EnqueueDeadlineError("abandoned"), "timeout"),
        (NotWrittenError("not enqueued", KafkaTimeoutError()), "timeout"),
        (NotConnectedError("down"), "unavailable"),
        (KafkaConnectionError(), "unavailable"),
        (NotLeaderForPartitionError(), "unavailable"),
        (LeaderNotAvailableError(), "unavailable"),
        (InvalidTopicError(), "other"),
        (UnknownTopicOrPartitionError(), "other"),
        (NotWrittenError("not enqueued", ValueError("bad")), "other"),
        (NotWrittenError("no cause"), "other"),
        (RuntimeError("?"), "other"),
    ],
)
def test_error_kind_is_bounded(exc: BaseException, kind: str) -> None:
    assert kind in ERROR_KINDS
    assert outcomes.error_kind(exc) == kind
    assert outcomes.classify(exc).kind == kind


def test_every_error_kind_is_exported_from_the_start() -> None:
    text = generate_latest(REGISTRY).decode()
    for kind in ERROR_KINDS:
        assert f'kraftwerk_producer_errors_total{{kind="{kind}"}}' in text


@pytest.fixture
def producer() -> Iterator[tuple[TestClient, FakeSender]]:
    settings = ProducerSettings(api_keys="good-key", request_deadline_seconds=0.3, batch_max_size=5)
    sender = FakeSender()
    with TestClient(create_app(settings, sender)) as client:
        yield client, sender


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (NotEnoughReplicasError(), "not_enough_replicas"),
        (TopicAuthorizationFailedError(), "auth"),
        (MessageSizeTooLargeError(), "too_large"),
        (("raise", KafkaTimeoutError()), "timeout"),
        ("hang", "timeout"),  # no acknowledgement within the request deadline
        ("stall", "timeout"),  # not enqueued within the deadline
        (KafkaConnectionError(), "unavailable"),
        (InvalidTopicError(), "other"),
    ],
)
def test_send_counts_the_error_kind(
    producer: tuple[TestClient, FakeSender], behaviour: Any, kind: str
) -> None:
    client, sender = producer
    sender.plan = [behaviour]
    before = producer_errors()
    resp = client.post("/send", json={"a": 1}, headers=KEY)
    assert resp.status_code >= 400
    after = producer_errors()
    assert {k: after[k] - before[k] for k in ERROR_KINDS} == {
        k: 1.0 if k == kind else 0.0 for k in ERROR_KINDS
    }


def test_not_connected_counts_unavailable_per_message(
    producer: tuple[TestClient, FakeSender],
) -> None:
    client, sender = producer
    sender.mode = "down"
    before = producer_errors()
    resp = client.post(
        "/send/batch", json={"messages": [{"value": {"n": i}} for i in range(3)]}, headers=KEY
    )
    assert resp.status_code == 503
    after = producer_errors()
    assert after["unavailable"] - before["unavailable"] == 3


def test_acknowledged_sends_count_no_error(producer: tuple[TestClient, FakeSender]) -> None:
    client, sender = producer
    before = producer_errors()
    sender.plan = ["ok", NotEnoughReplicasError(), "ok"]
    resp = client.post(
        "/send/batch", json={"messages": [{"value": {"n": i}} for i in range(3)]}, headers=KEY
    )
    assert resp.status_code in (503, 504)
    after = producer_errors()
    assert sum(after.values()) - sum(before.values()) == 1
    assert after["not_enough_replicas"] - before["not_enough_replicas"] == 1
    acked = sample("kraftwerk_producer_messages_total", outcome="acked")
    client.post("/send", json={"a": 1}, headers=KEY)
    assert producer_errors() == after
    assert sample("kraftwerk_producer_messages_total", outcome="acked") == acked + 1


# --- consumer: failed (by reason), processed, retries, DLQ ------------------------------------


class _Rec:
    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = "t", 0, offset, value
        self.timestamp, self.timestamp_type, self.key = 1000, 1, None
        self.headers: list[tuple[str, bytes]] = []


class _Dlq:
    def __init__(self) -> None:
        self.sent: list[int] = []

    async def start(self) -> None:
        return None

    async def send(self, record: Any, reason: str, attempts: int) -> None:
        self.sent.append(record.offset)


class _Consumer:
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None


def consumer_counts() -> dict[str, float]:
    return {
        "processed": sample("kraftwerk_consumer_messages_processed_total"),
        "retries": sample("kraftwerk_consumer_message_retries_total"),
        "permanent": sample("kraftwerk_consumer_messages_failed_total", reason="permanent"),
        "transient": sample("kraftwerk_consumer_messages_failed_total", reason="transient"),
    }


async def test_consumer_counts_processed_retried_and_failed_by_reason() -> None:
    async def handler(record: Any) -> None:
        if record.offset == 2:
            raise KafkaConnectionError("broker gone")  # transient: retried, then DLQ
        decode_json_object(record.value)  # offset 1: permanent (not JSON)

    settings = ConsumerSettings(retry_count=2, retry_backoff_seconds=0, retry_backoff_max_seconds=0)
    dlq = _Dlq()
    worker = GroupWorker(settings, cast(DlqWriter, dlq), handler)
    records = [_Rec(o, b"x" if o == 1 else b"{}") for o in range(4)]
    before = consumer_counts()
    await worker._handle_poll(cast(Any, _Consumer()), {TopicPartition("t", 0): records})
    after = consumer_counts()
    assert {k: after[k] - before[k] for k in after} == {
        "processed": 2,
        "retries": 2,
        "permanent": 1,
        "transient": 1,
    }
    assert dlq.sent == [1, 2]


def test_consumer_failed_reasons_exported_from_the_start() -> None:
    text = generate_latest(REGISTRY).decode()
    for reason in ("permanent", "transient"):
        assert f'kraftwerk_consumer_messages_failed_total{{reason="{reason}"}}' in text


# --- consumer: kraftwerk_consumer_lag{topic, partition} ---------------------------------------


class _History:
    def __init__(self) -> None:
        self.duplicates = 0

    async def end_offsets(self) -> dict[int, int]:
        return {0: 10, 1: 5}

    def partitions(self) -> list[int]:
        return [0, 1]


class _Cluster:
    async def committed(self) -> dict[int, int]:
        return {0: 7}

    def list_partitions(self) -> list[int]:
        return [0, 1]


async def test_lag_per_topic_and_partition() -> None:
    settings = ConsumerSettings(topic="lag-topic")
    worker = GroupWorker(settings, cast(DlqWriter, _Dlq()))
    dashboard = Dashboard(settings, cast(Any, _Cluster()), worker, Broadcaster())
    dashboard.history = cast(Any, _History())
    await asyncio.wait_for(dashboard._refresh_stats(), 5)
    lag = {p: sample("kraftwerk_consumer_lag", topic="lag-topic", partition=p) for p in ("0", "1")}
    assert lag == {"0": 3.0, "1": 5.0}
