"""kraftwerk-topic-backup against a real Kafka 3.9.1: export, import, verify.

The source topics get records of every kind a client may write: null keys, null values, both
null, empty and random binary keys and values, headers with null, empty and binary values
(repeated names, non-ASCII names), a large value, batches in every codec, explicit old
timestamps, a committed and an aborted transaction, and an empty partition.  The round trip is
checked by the tool's own verify and, independently, record by record here.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kraftwerk_apps.tools.backup_format import (
    BackupFormatError,
    BackupReader,
    encode_record,
    write_backup,
)
from kraftwerk_apps.tools.topic_backup import (
    BackupError,
    TopicBackupSettings,
    export_topic,
    import_topic,
    verify_topic,
)
from tests.conftest import _create_topics

PARTITIONS = 5  # partition 4 stays empty
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
CREATE_TIME = {"message.timestamp.type": "CreateTime", "retention.ms": "-1"}
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1"}
BASE_TS = 1_600_000_000_000  # September 2020: far older than "now"


def _settings(bootstrap: str) -> TopicBackupSettings:
    return TopicBackupSettings(bootstrap_servers=[bootstrap], backup_idle_timeout_seconds=20)


def _record_kinds(rng: random.Random) -> list[dict[str, Any]]:
    """One of every kind, then random ones."""
    blob = rng.randbytes
    kinds: list[dict[str, Any]] = [
        {"key": None, "value": b"null key", "headers": []},
        {"key": b"null value", "value": None, "headers": []},
        {"key": None, "value": None, "headers": []},
        {"key": None, "value": None, "headers": [("only-headers", b"\x00")]},
        {"key": b"", "value": b"", "headers": [("empty", b"")]},
        {"key": blob(16), "value": blob(300), "headers": [("h-null", None), ("h-bin", blob(8))]},
        {"key": b"\xff\xfe", "value": b"\x00" * 10, "headers": [("dup", b"1"), ("dup", None)]},
        {"key": "ключ".encode(), "value": "wert ü 🎉".encode(), "headers": [("nom-é", blob(3))]},
        {"key": b"big", "value": blob(300_000), "headers": []},
    ]
    for _ in range(40):
        kinds.append(
            {
                "key": rng.choice([None, blob(rng.randint(0, 40))]),
                "value": rng.choice([None, blob(rng.randint(0, 2_000))]),
                "headers": [
                    (f"h{j}", rng.choice([None, blob(rng.randint(0, 30))]))
                    for j in range(rng.randint(0, 4))
                ],
            }
        )
    return kinds


async def _produce_everything(bootstrap: str, topic: str, seed: int) -> None:
    rng = random.Random(seed)
    ts = BASE_TS
    for codec in CODECS:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=codec,
            enable_idempotence=True,
            max_request_size=2_000_000,
            linger_ms=20,
        )
        await producer.start()
        try:
            futures = []
            for i, kind in enumerate(_record_kinds(rng)):
                partition = i % (PARTITIONS - 1)
                ts += rng.randint(-5_000, 60_000)  # not monotonic, like real producers
                if kind["key"] is None and kind["value"] is None:
                    # send() refuses a record with neither key nor value; a batch takes it.
                    batch = producer.create_batch()
                    batch.append(timestamp=ts, key=None, value=None, headers=kind["headers"])
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                else:
                    futures.append(
                        await producer.send(
                            topic,
                            value=kind["value"],
                            key=kind["key"],
                            partition=partition,
                            timestamp_ms=ts,
                            headers=kind["headers"],
                        )
                    )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
    # Transactions: a committed one (kept) and an aborted one (left out by read_committed).
    txn = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kw-{uuid.uuid4()}")
    await txn.start()
    try:
        async with txn.transaction():
            for p in range(PARTITIONS - 1):
                await txn.send(topic, value=b"committed", partition=p, timestamp_ms=ts + p)
        await txn.begin_transaction()
        for p in range(PARTITIONS - 1):
            await txn.send(topic, value=b"aborted", partition=p, timestamp_ms=ts + p)
        await txn.abort_transaction()
    finally:
        await txn.stop()


async def _read_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> list[Any]:
    """Every committed record of ``topic``, by partition then offset (a plain consumer)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        out: list[Any] = []
        for tp in tps:
            first = begins[tp]
            if first >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, first)
            async with asyncio.timeout(30):
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    out.extend(r for r in batch.get(tp, []) if r.offset < ends[tp])
        return out
    finally:
        await consumer.stop()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kraftwerk_apps.tools.topic_backup", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def _fields(record: Any) -> tuple[Any, ...]:
    """What a restore keeps: partition, key, value, headers (as lists), timestamp."""
    headers = [(name, None if v is None else bytes(v)) for name, v in record.headers]
    return (record.partition, record.key, record.value, headers, record.timestamp)


@pytest.fixture(scope="module")
def source(kafka_bootstrap: str) -> str:
    """A CreateTime topic with records of every kind (partition 4 empty)."""
    topic = f"kw-backup-src-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topics(kafka_bootstrap, {topic: PARTITIONS}, {topic: CREATE_TIME}))
    asyncio.run(_produce_everything(kafka_bootstrap, topic, seed=7))
    return topic


@pytest.fixture(scope="module")
def backup(kafka_bootstrap: str, source: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{source}.jsonl.gz"
        asyncio.run(export_topic(_settings(kafka_bootstrap), source, path))
        yield path


async def _fresh_topic(bootstrap: str, partitions: int, configs: dict[str, str]) -> str:
    topic = f"kw-backup-dst-{uuid.uuid4().hex[:8]}"
    await _create_topics(bootstrap, {topic: partitions}, {topic: configs})
    return topic


async def test_export_holds_every_committed_record(
    kafka_bootstrap: str, source: str, backup: Path
) -> None:
    expected = await _read_topic(kafka_bootstrap, source)
    assert len(expected) == len(CODECS) * len(_record_kinds(random.Random(0))) + PARTITIONS - 1
    assert not [r for r in expected if r.value == b"aborted"]
    assert oct((await asyncio.to_thread(backup.stat)).st_mode & 0o777) == "0o600"
    with BackupReader(backup) as reader:
        header = reader.header
        records = list(reader.records())
    assert header.topic == source
    assert header.partitions == PARTITIONS
    assert header.timestamp_type == "CreateTime"
    assert header.records == len(expected)
    assert header.offsets[PARTITIONS - 1].records == 0
    # The partition, offset, timestamp (type), key, value and headers of every record.
    assert [(r.partition, r.offset) for r in records] == [(r.partition, r.offset) for r in expected]
    assert [(r.partition, r.key, r.value, list(r.headers), r.timestamp) for r in records] == [
        _fields(r) for r in expected
    ]
    assert {r.timestamp_type for r in records} == {"CreateTime"}
    # The transaction's control records leave gaps: the header's end is past the last record.
    assert all(
        header.offsets[p].end > max(r.offset for r in records if r.partition == p) + 1
        for p in range(PARTITIONS - 1)
    )


async def test_round_trip_record_by_record(kafka_bootstrap: str, source: str, backup: Path) -> None:
    settings = _settings(kafka_bootstrap)
    target = await _fresh_topic(kafka_bootstrap, PARTITIONS, CREATE_TIME)
    summary = await import_topic(settings, backup, target, allow_non_empty=False)
    assert summary["target_start_offsets"] == {str(p): 0 for p in range(PARTITIONS)}

    result = await verify_topic(settings, backup, target, None)
    assert result["ok"], result
    assert result["mismatches"] == 0
    assert result["records_compared"] == summary["records"] == result["records_in_backup"]
    assert result["timestamps_compared"] == result["records_compared"]

    # Independently of verify: the same records, partition by partition, in order.
    original = await _read_topic(kafka_bootstrap, source)
    restored = await _read_topic(kafka_bootstrap, target)
    assert [_fields(r) for r in restored] == [_fields(r) for r in original]
    assert {r.timestamp_type for r in restored} == {0}


async def test_verify_fails_when_one_record_differs(
    kafka_bootstrap: str, backup: Path, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap)
    target = await _fresh_topic(kafka_bootstrap, PARTITIONS, CREATE_TIME)
    await import_topic(settings, backup, target, allow_non_empty=False)

    # A copy of the backup with one byte of one value changed.
    with BackupReader(backup) as reader:
        header = reader.header
        records = list(reader.records())
    victim = next(i for i, r in enumerate(records) if r.value and r.partition == 2)
    value = records[victim].value
    assert value is not None
    records[victim] = replace(records[victim], value=bytes([value[0] ^ 1]) + value[1:])
    member = tmp_path / "records.gz"
    with gzip.open(member, "wt", encoding="utf-8") as out:
        out.writelines(encode_record(r) for r in records)
    edited = tmp_path / "edited.jsonl.gz"
    write_backup(edited, header, member)

    result = await verify_topic(settings, edited, target, None)
    assert not result["ok"]
    assert result["mismatches"] == 1
    assert result["examples"] == [
        {
            "partition": 2,
            "backup_offset": records[victim].offset,
            "target_offset": result["examples"][0]["target_offset"],
            "fields": ["value"],
        }
    ]

    # The CLI exits 1 on that, 0 on the untouched backup (settings from --env-file).
    env_file = tmp_path / "kafka.env"
    env_file.write_text(f"KRAFTWERK_BOOTSTRAP_SERVERS={kafka_bootstrap}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRAFTWERK_")}
    cli = ["--env-file", str(env_file), "verify", "--topic", target, "--input"]
    bad = await asyncio.to_thread(_cli, [*cli, str(edited)], env)
    assert bad.returncode == 1, bad.stderr
    assert '"mismatches": 1' in bad.stdout
    good = await asyncio.to_thread(_cli, [*cli, str(backup)], env)
    assert good.returncode == 0, good.stdout + good.stderr

    # A record added to the topic afterwards is a mismatch too.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(target, b"intruder", partition=4)
    finally:
        await producer.stop()
    extra = await verify_topic(settings, backup, target, None)
    assert extra["mismatches"] == 1
    assert extra["examples"][0]["problem"] == "unexpected record in the topic"


async def test_import_refuses_fewer_partitions(kafka_bootstrap: str, backup: Path) -> None:
    target = await _fresh_topic(kafka_bootstrap, PARTITIONS - 1, CREATE_TIME)
    with pytest.raises(BackupError, match=r"has 4 partitions, the backup .* needs at least 5"):
        await import_topic(_settings(kafka_bootstrap), backup, target, allow_non_empty=False)
    assert await _read_topic(kafka_bootstrap, target, PARTITIONS - 1) == []


async def test_import_refuses_a_truncated_file_before_writing(
    kafka_bootstrap: str, backup: Path, tmp_path: Path
) -> None:
    target = await _fresh_topic(kafka_bootstrap, PARTITIONS, CREATE_TIME)
    data = await asyncio.to_thread(backup.read_bytes)
    truncated = tmp_path / "truncated.jsonl.gz"
    await asyncio.to_thread(truncated.write_bytes, data[: len(data) * 2 // 3])
    with pytest.raises(BackupFormatError, match="damaged or truncated"):
        await import_topic(_settings(kafka_bootstrap), truncated, target, allow_non_empty=False)
    assert await _read_topic(kafka_bootstrap, target) == []


async def test_import_refuses_a_topic_with_records(kafka_bootstrap: str, backup: Path) -> None:
    settings = _settings(kafka_bootstrap)
    target = await _fresh_topic(kafka_bootstrap, PARTITIONS, CREATE_TIME)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(target, b"already here", partition=1)
    finally:
        await producer.stop()
    with pytest.raises(BackupError, match="already holds records"):
        await import_topic(settings, backup, target, allow_non_empty=False)
    assert len(await _read_topic(kafka_bootstrap, target)) == 1

    # Allowed explicitly: appended after the record that was there; verify from import's offsets.
    summary = await import_topic(settings, backup, target, allow_non_empty=True)
    assert summary["target_start_offsets"]["1"] == 1
    starts = {int(p): o for p, o in summary["target_start_offsets"].items()}
    assert (await verify_topic(settings, backup, target, starts))["ok"]
    assert not (await verify_topic(settings, backup, target, None))["ok"]


async def test_log_append_time_source(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A LogAppendTime topic (like test-topic): its append times become the restore's CreateTime;
    restored into a LogAppendTime topic the broker stamps new times, which verify leaves out."""
    settings = _settings(kafka_bootstrap)
    source = await _fresh_topic(kafka_bootstrap, 2, LOG_APPEND_TIME)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type="zstd")
    await producer.start()
    try:
        for i in range(20):
            await producer.send(source, f"v{i}".encode(), key=b"k", partition=i % 2, headers=[])
        await producer.flush()
    finally:
        await producer.stop()
    path = tmp_path / "lat.jsonl.gz"
    exported = await export_topic(settings, source, path)
    assert exported["timestamp_type"] == "LogAppendTime"
    assert exported["records"] == 20

    create_time = await _fresh_topic(kafka_bootstrap, 2, CREATE_TIME)
    await import_topic(settings, path, create_time, allow_non_empty=False)
    result = await verify_topic(settings, path, create_time, None)
    assert result["ok"]
    assert result["timestamps_compared"] == 20
    original = await _read_topic(kafka_bootstrap, source, 2)
    restored = await _read_topic(kafka_bootstrap, create_time, 2)
    assert [_fields(r) for r in restored] == [_fields(r) for r in original]

    await asyncio.sleep(0.01)  # the new append times differ from the original ones
    log_append = await _fresh_topic(kafka_bootstrap, 3, LOG_APPEND_TIME)
    await import_topic(settings, path, log_append, allow_non_empty=False)
    result = await verify_topic(settings, path, log_append, None)
    assert result["ok"]
    assert result["records_compared"] == 20
    assert result["timestamps_compared"] == 0


def test_cli_refusal_exits_2(kafka_bootstrap: str, backup: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRAFTWERK_")}
    env["KRAFTWERK_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    missing = f"kw-missing-{uuid.uuid4().hex[:8]}"
    result = _cli(["import", "--input", str(backup), "--topic", missing], env)
    assert result.returncode == 2
    assert "not found or not visible" in result.stderr
