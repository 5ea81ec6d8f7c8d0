from __future__ import annotations

import pytest

from kraftwerk_apps.common.server import uvicorn_options
from kraftwerk_apps.common.settings import split_csv
from kraftwerk_apps.consumer.settings import ConsumerSettings
from kraftwerk_apps.producer.settings import ProducerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("KRAFTWERK_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    p = ProducerSettings()
    c = ConsumerSettings()
    assert (p.port, c.port) == (8001, 8002)
    assert p.topic == c.topic == "test-topic"
    assert c.dlq_topic == "test-topic.dlq"
    assert c.group_id == "test-group"
    assert c.history_size == 10
    assert p.api_keys == []


def test_env_csv_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_BOOTSTRAP_SERVERS", "a:9092, b:9093,,c:9094")
    monkeypatch.setenv("KRAFTWERK_API_KEYS", "s3cret-1,s3cret-2")
    monkeypatch.setenv("KRAFTWERK_REQUEST_DEADLINE_SECONDS", "2.5")
    monkeypatch.setenv("KRAFTWERK_WORKERS", "3")
    s = ProducerSettings()
    assert s.bootstrap_servers == ["a:9092", "b:9093", "c:9094"]
    assert s.api_key_bytes() == [b"s3cret-1", b"s3cret-2"]
    assert "s3cret" not in repr(s)
    assert s.request_deadline_seconds == 2.5
    assert s.workers == 3
    assert s.kafka_kwargs()["bootstrap_servers"] == "a:9092,b:9093,c:9094"


def test_empty_bootstrap_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_BOOTSTRAP_SERVERS", " , ")
    with pytest.raises(ValueError, match="bootstrap"):
        ConsumerSettings()


def test_sasl_ssl_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KRAFTWERK_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KRAFTWERK_SASL_USERNAME", "app")
    monkeypatch.setenv("KRAFTWERK_SASL_PASSWORD", "pw")
    kw = ConsumerSettings().kafka_kwargs()
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_password"] == "pw"
    assert "ssl_context" not in kw


def test_split_csv() -> None:
    assert split_csv(" x ,y,") == ["x", "y"]
    assert split_csv(["x"]) == ["x"]


def test_resilience_defaults() -> None:
    c = ConsumerSettings()
    assert c.max_poll_interval_ms == 300_000
    assert c.poll_budget_seconds == 150.0
    assert c.dedupe_window_seconds == 600
    assert c.dedupe_max_keys == 100_000
    assert c.dlq_truncate_bytes < 1_000_000
    assert c.dlq_retry_count == 5
    assert c.keepalive_timeout_seconds == 75
    assert c.fatal_exit_delay_seconds == 1.0


def test_keepalive_reaches_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_KEEPALIVE_TIMEOUT_SECONDS", "90")
    options = uvicorn_options(ConsumerSettings())
    assert options["timeout_keep_alive"] == 90
    assert options["factory"] is True
    assert uvicorn_options(ProducerSettings())["timeout_keep_alive"] == 90
    monkeypatch.setenv("KRAFTWERK_KEEPALIVE_TIMEOUT_SECONDS", "0")
    with pytest.raises(ValueError, match="keepalive"):
        ConsumerSettings()


def test_poll_budget_fraction_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_MAX_POLL_INTERVAL_MS", "60000")
    monkeypatch.setenv("KRAFTWERK_POLL_BUDGET_FRACTION", "0.25")
    assert ConsumerSettings().poll_budget_seconds == 15.0
    monkeypatch.setenv("KRAFTWERK_POLL_BUDGET_FRACTION", "1")
    with pytest.raises(ValueError, match="poll_budget_fraction"):
        ConsumerSettings()
