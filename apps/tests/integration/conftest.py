from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import AppProcess, free_port, running_apps, start_app

API_KEY = "integration-key"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("applogs"))


def _common(bootstrap: str, topic: str, dlq: str) -> dict[str, str]:
    return {
        "KRAFTWERK_BOOTSTRAP_SERVERS": bootstrap,
        "KRAFTWERK_TOPIC": topic,
        "KRAFTWERK_DLQ_TOPIC": dlq,
        "KRAFTWERK_CONNECT_BACKOFF_SECONDS": "0.2",
        "KRAFTWERK_CONNECT_BACKOFF_MAX_SECONDS": "1",
        "KRAFTWERK_LOG_LEVEL": "info",
    }


@pytest.fixture(scope="module")
def producer(kafka_bootstrap: str, topics: tuple[str, str], logs: Path) -> Iterator[AppProcess]:
    env = {
        **_common(kafka_bootstrap, *topics),
        "KRAFTWERK_API_KEYS": f"unused,{API_KEY}",
        "KRAFTWERK_REQUEST_DEADLINE_SECONDS": "5",
        "KRAFTWERK_BATCH_MAX_SIZE": "50",
    }
    app = start_app("producer", env, logs)
    try:
        app.wait_http("/readyz", 200)
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def consumers(
    kafka_bootstrap: str, topics: tuple[str, str], logs: Path
) -> Iterator[list[AppProcess]]:
    """Two instances of the consumer sharing one group."""
    env = {
        **_common(kafka_bootstrap, *topics),
        "KRAFTWERK_GROUP_ID": f"kw-group-{uuid.uuid4().hex[:6]}",
        "KRAFTWERK_RETRY_COUNT": "2",
        "KRAFTWERK_RETRY_BACKOFF_SECONDS": "0.1",
        "KRAFTWERK_RETRY_BACKOFF_MAX_SECONDS": "0.2",
        "KRAFTWERK_STATS_INTERVAL_SECONDS": "0.5",
        "KRAFTWERK_SSE_KEEPALIVE_SECONDS": "1",
        "KRAFTWERK_HISTORY_SIZE": "10",
    }
    with running_apps("consumer", env, logs, 2) as apps:
        yield apps


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound then released: nothing listens there
