"""Shared fixtures.

Integration tests (``tests/integration``) need a real Kafka.  The session fixture starts a
single-node KRaft Kafka 3.9.1 from jars on 127.0.0.1:29092 (controller 29093) unless
``KRAFTWERK_TEST_BOOTSTRAP`` names an existing cluster.  If Kafka cannot be started the
integration tests *fail* (they are not skipped) unless ``KRAFTWERK_TEST_SKIP_INTEGRATION=1``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_server import KafkaStartError, start_kafka

SKIP_ENV = "KRAFTWERK_TEST_SKIP_INTEGRATION"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = _truthy(os.environ.get(SKIP_ENV))
    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if skip:
                item.add_marker(pytest.mark.skip(reason=f"{SKIP_ENV} is set"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KRAFTWERK_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    workdir = Path(tmp_path_factory.mktemp("kafka"))
    try:
        kafka = start_kafka(workdir)
    except KafkaStartError as exc:
        pytest.fail(
            f"could not start Kafka for the integration tests: {exc}\n"
            f"(set {SKIP_ENV}=1 to skip them, or KRAFTWERK_TEST_BOOTSTRAP=host:port)",
            pytrace=False,
        )
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


# Like the deployment (roles/kafka_topics): the page orders by the broker's append time.
TOPIC_CONFIGS = {"message.timestamp.type": "LogAppendTime"}


async def _create_topics(
    bootstrap: str,
    topics: dict[str, int],
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create ``topics`` (name -> partitions) with ``TOPIC_CONFIGS`` plus ``configs[name]``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=n,
                    replication_factor=1,
                    topic_configs={**TOPIC_CONFIGS, **configs.get(name, {})},
                )
                for name, n in topics.items()
            ]
        )
        for _ in range(100):
            found = set(await admin.list_topics())
            if set(topics) <= found:
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def topics(kafka_bootstrap: str) -> tuple[str, str]:
    """A fresh topic (3 partitions) and its DLQ (1 partition) for this test session."""
    topic = f"kw-test-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    asyncio.run(_create_topics(kafka_bootstrap, {topic: 3, dlq: 1}))
    return topic, dlq
