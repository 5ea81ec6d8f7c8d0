"""kraftwerk-topic-backup: export a topic to a file, import it into a topic, verify the two.

    kraftwerk-topic-backup [--env-file F] export --topic T --output FILE
    kraftwerk-topic-backup [--env-file F] import --input FILE --topic T [--allow-non-empty]
    kraftwerk-topic-backup [--env-file F] verify --input FILE --topic T [--start-offsets JSON]

The Kafka connection comes from ``KRAFTWERK_*`` variables (bootstrap servers, security
protocol, SASL, CA; see ``kraftwerk_apps.common.settings``), from the environment or from
``--env-file`` (keep the password there, not on a command line).  Each command prints one JSON
summary on stdout.  Exit status: 0 done, 1 verify found differences, 2 refused or failed (the
reason on stderr).

export: every partition from its log start to its end offset when the export starts (read
committed: aborted transactions are left out), one partition after another, with a plain
consumer (manual assignment, no group, no commits).  The file format is in ``backup_format``.

import: into an existing topic with at least as many partitions, each record into its own
partition, in order, with its key, value, headers and timestamp (as CreateTime; a topic with
LogAppendTime stamps its own), by an idempotent producer (acks=all).  A topic that already holds
records is refused unless ``--allow-non-empty``.  The summary's ``target_start_offsets`` are
the end offsets before the import: give them to ``verify --start-offsets``.

verify: reads the topic from ``--start-offsets`` (default: each partition's log start) to its
current end and compares it with the file record by record, per partition in order: key,
value, headers, and the timestamp of each record that the topic keeps as CreateTime.  Missing
and unexpected records count as mismatches.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from kraftwerk_apps.common.kafka import missing_codecs
from kraftwerk_apps.common.settings import ENV_PREFIX, KafkaConnectionSettings
from kraftwerk_apps.tools.backup_format import (
    TIMESTAMP_TYPES,
    BackupFormatError,
    BackupHeader,
    BackupReader,
    BackupRecord,
    PartitionInfo,
    encode_record,
    write_backup,
)

log = logging.getLogger("kraftwerk_apps.tools.topic_backup")

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_FAILED = 2
CREATE_TIME = TIMESTAMP_TYPES[0]
MAX_EXAMPLES = 10


class BackupError(RuntimeError):
    """A refusal or failure with a message for the operator."""


class TopicBackupSettings(KafkaConnectionSettings):
    """The Kafka connection (``KRAFTWERK_*``) plus the tool's own knobs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
    )

    client_id: str = "kraftwerk-topic-backup"
    backup_poll_records: int = Field(default=5_000, ge=1)
    backup_idle_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="export/verify fail when a partition's position does not move for this long.",
    )
    backup_batch_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        description="import: size of the record batches sent (a larger record gets a batch alone).",
    )
    backup_max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)


# --- Kafka helpers -------------------------------------------------------------------------


def _kafka_error_name(code: int) -> str:
    from aiokafka.errors import for_code  # noqa: PLC0415 - only on the error path

    return str(for_code(code).__name__)


async def describe_topic(settings: TopicBackupSettings, topic: str) -> tuple[int, str | None]:
    """The topic's partition count and ``message.timestamp.type`` (None if not readable)."""
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    await admin.start()
    try:
        found = [t for t in await admin.describe_topics([topic]) if t["topic"] == topic]
        if not found or found[0]["error_code"] != 0:
            error = _kafka_error_name(found[0]["error_code"]) if found else "no metadata"
            raise BackupError(
                f"topic {topic!r} not found or not visible to this principal ({error}): the "
                "principal needs Describe (Read or Write imply it) on the topic"
            )
        partitions = len(found[0]["partitions"])
        timestamp_type: str | None = None
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
            for response in responses:
                for resource in response.to_object()["resources"]:
                    if resource["error_code"] != 0:
                        log.warning(
                            "topic configs not readable (DescribeConfigs ACL?): %s",
                            _kafka_error_name(resource["error_code"]),
                        )
                        continue
                    for entry in resource["config_entries"]:
                        if entry["config_names"] == "message.timestamp.type":
                            timestamp_type = entry["config_value"]
        except KafkaError as exc:
            log.warning("topic configs not readable: %r", exc)
        return partitions, timestamp_type
    finally:
        await admin.close()


def _consumer(settings: TopicBackupSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **settings.kafka_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        # Records deleted (retention) while they are read fail the run instead of being skipped.
        auto_offset_reset="none",
        max_partition_fetch_bytes=settings.backup_max_request_bytes,
        fetch_max_bytes=max(settings.backup_max_request_bytes, 52_428_800),
    )


async def _offsets(
    consumer: AIOKafkaConsumer, topic: str, partitions: int
) -> dict[int, tuple[int, int]]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    return {tp.partition: (int(starts[tp]), int(ends[tp])) for tp in tps}


async def _read_partition(
    consumer: AIOKafkaConsumer,
    settings: TopicBackupSettings,
    tp: TopicPartition,
    start: int,
    end: int,
) -> AsyncIterator[Any]:
    """Yield the records of ``tp`` from ``start`` up to (not including) ``end``."""
    if start >= end:
        return
    consumer.assign([tp])
    consumer.seek(tp, start)
    last_progress = time.monotonic()
    position = start
    while position < end:
        batches = await consumer.getmany(
            tp, timeout_ms=1000, max_records=settings.backup_poll_records
        )
        for record in batches.get(tp, []):
            if record.offset >= end:
                return
            yield record
        new_position = await consumer.position(tp)
        if new_position != position:
            position = new_position
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > settings.backup_idle_timeout_seconds:
            raise BackupError(
                f"{tp.topic}[{tp.partition}] stuck at offset {position} (end {end}) for "
                f"{settings.backup_idle_timeout_seconds:g}s"
            )


def _to_backup_record(record: Any) -> BackupRecord:
    return BackupRecord(
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        timestamp_type=TIMESTAMP_TYPES.get(record.timestamp_type, str(record.timestamp_type)),
        key=None if record.key is None else bytes(record.key),
        value=None if record.value is None else bytes(record.value),
        headers=tuple(
            (name, None if value is None else bytes(value)) for name, value in record.headers
        ),
    )


def _check_codecs() -> None:
    missing = missing_codecs()
    if missing:
        raise BackupError(f"compression codecs missing here: {', '.join(missing)} (cramjam)")


# --- export --------------------------------------------------------------------------------


async def export_topic(settings: TopicBackupSettings, topic: str, output: Path) -> dict[str, Any]:
    _check_codecs()
    partitions, timestamp_type = await describe_topic(settings, topic)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        offsets = await _offsets(consumer, topic, partitions)
        header = BackupHeader(
            topic=topic,
            partitions=partitions,
            timestamp_type=timestamp_type,
            offsets={p: PartitionInfo(start, end) for p, (start, end) in offsets.items()},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".topic-backup-") as tmp:
            member = Path(tmp) / "records.gz"
            with member.open("wb") as raw:
                member.chmod(0o600)
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as gz:
                    for p in range(partitions):
                        start, end = offsets[p]
                        tp = TopicPartition(topic, p)
                        async for record in _read_partition(consumer, settings, tp, start, end):
                            gz.write(encode_record(_to_backup_record(record)).encode("utf-8"))
                            header.offsets[p].records += 1
                        header.records += header.offsets[p].records
            partial = Path(tmp) / output.name
            write_backup(partial, header, member)
            partial.replace(output)
    finally:
        await consumer.stop()
    return {
        "command": "export",
        "topic": topic,
        "file": str(output),
        "partitions": partitions,
        "timestamp_type": timestamp_type,
        "records": header.records,
        "offsets": header.to_json()["offsets"],
    }


# --- import --------------------------------------------------------------------------------


async def _check_target(
    settings: TopicBackupSettings, header: BackupHeader, topic: str, allow_non_empty: bool
) -> tuple[int, str | None, dict[int, int]]:
    partitions, timestamp_type = await describe_topic(settings, topic)
    if partitions < header.partitions:
        raise BackupError(
            f"topic {topic!r} has {partitions} partitions, the backup of {header.topic!r} needs "
            f"at least {header.partitions}: every record goes back to its own partition. Create "
            "the target with enough partitions (or restore into another topic)."
        )
    consumer = _consumer(settings)
    await consumer.start()
    try:
        offsets = await _offsets(consumer, topic, partitions)
    finally:
        await consumer.stop()
    held = {p: end - start for p, (start, end) in offsets.items() if end > start}
    if held and not allow_non_empty:
        raise BackupError(
            f"topic {topic!r} already holds records ({sum(held.values())} in partitions "
            f"{sorted(held)}): refusing to mix them with the backup. Restore into an empty topic, "
            "or pass --allow-non-empty to append anyway."
        )
    return partitions, timestamp_type, {p: end for p, (_, end) in offsets.items()}


def _check_file(source: Path) -> None:
    with BackupReader(source) as reader:
        for _ in reader.records():
            pass


async def import_topic(
    settings: TopicBackupSettings, source: Path, topic: str, allow_non_empty: bool
) -> dict[str, Any]:
    _check_codecs()
    # The whole file is read once before anything is written: a damaged or truncated file (gzip
    # checks its CRC only at the end) fails here rather than after half of it was restored.
    await asyncio.to_thread(_check_file, source)
    with BackupReader(source) as reader:
        header = reader.header
        partitions, timestamp_type, start_offsets = await _check_target(
            settings, header, topic, allow_non_empty
        )
        producer = AIOKafkaProducer(
            **settings.kafka_kwargs(),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=settings.backup_batch_bytes,
            max_request_size=settings.backup_max_request_bytes,
        )
        await producer.start()
        sent = 0
        try:
            # Batches built here rather than producer.send(): a record may have neither key nor
            # value (send() refuses that), and whole batches per partition are cheaper.
            pending: list[asyncio.Future[Any]] = []
            for partition, records in groupby(reader.records(), key=lambda r: r.partition):
                batch = producer.create_batch()
                for record in records:
                    meta = batch.append(
                        timestamp=record.timestamp if record.timestamp >= 0 else None,
                        key=record.key,
                        value=record.value,
                        headers=list(record.headers),
                    )
                    if meta is None:
                        if batch.record_count() == 0:
                            raise BackupError(
                                f"record {partition}/{record.offset} does not fit a request of "
                                f"{settings.backup_max_request_bytes} bytes"
                            )
                        pending.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        if (
                            batch.append(
                                timestamp=record.timestamp if record.timestamp >= 0 else None,
                                key=record.key,
                                value=record.value,
                                headers=list(record.headers),
                            )
                            is None
                        ):
                            raise BackupError(
                                f"record {partition}/{record.offset} is larger than a batch "
                                f"({settings.backup_batch_bytes} bytes): raise "
                                "KRAFTWERK_BACKUP_BATCH_BYTES"
                            )
                    sent += 1
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                if len(pending) > 64:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
            await producer.flush()
        except KafkaError as exc:
            raise BackupError(
                f"import into {topic!r} failed after {sent} records were queued ({exc!r}); the "
                "topic may hold part of the backup: delete and re-create it before a new attempt"
            ) from exc
        finally:
            await producer.stop()
    return {
        "command": "import",
        "file": str(source),
        "source_topic": header.topic,
        "topic": topic,
        "partitions": partitions,
        "timestamp_type": timestamp_type,
        "records": sent,
        "target_start_offsets": {str(p): o for p, o in sorted(start_offsets.items())},
    }


# --- verify --------------------------------------------------------------------------------


def _differences(expected: BackupRecord, actual: Any) -> list[str]:
    fields = []
    if expected.key != actual.key:
        fields.append("key")
    if expected.value != actual.value:
        fields.append("value")
    if [list(h) for h in expected.headers] != [list(h) for h in actual.headers]:
        fields.append("headers")
    if actual.timestamp_type == 0 and actual.timestamp != expected.timestamp:
        fields.append("timestamp")
    return fields


def _by_partition(reader: BackupReader, partitions: int) -> Iterator[tuple[int, Iterator[Any]]]:
    """(partition, its records) for every partition in 0..partitions-1, empty ones included."""
    groups = groupby(reader.records(), key=lambda r: r.partition)
    upcoming = next(groups, None)
    for p in range(partitions):
        if upcoming is not None and upcoming[0] == p:
            yield p, upcoming[1]
            upcoming = next(groups, None)
        else:
            yield p, iter(())
    # Drains the reader so that its final count check runs.
    for _ in groups:
        pass


async def verify_topic(
    settings: TopicBackupSettings,
    source: Path,
    topic: str,
    start_offsets: dict[int, int] | None,
) -> dict[str, Any]:
    _check_codecs()
    compared = timestamps = mismatches = 0
    examples: list[dict[str, Any]] = []

    def mismatch(example: dict[str, Any]) -> None:
        nonlocal mismatches
        mismatches += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(example)

    with BackupReader(source) as reader:
        header = reader.header
        partitions, timestamp_type = await describe_topic(settings, topic)
        if partitions < header.partitions:
            raise BackupError(
                f"topic {topic!r} has {partitions} partitions, the backup has {header.partitions}"
            )
        consumer = _consumer(settings)
        await consumer.start()
        try:
            offsets = await _offsets(consumer, topic, partitions)
            for p, expected_records in _by_partition(reader, partitions):
                log_start, end = offsets[p]
                start = max(log_start, (start_offsets or {}).get(p, log_start))
                tp = TopicPartition(topic, p)
                actual_records = _read_partition(consumer, settings, tp, start, end)
                expected_iter = iter(expected_records)
                async for actual in actual_records:
                    expected = next(expected_iter, None)
                    if expected is None:
                        mismatch(
                            {
                                "partition": p,
                                "target_offset": actual.offset,
                                "problem": "unexpected record in the topic",
                            }
                        )
                        continue
                    compared += 1
                    timestamps += actual.timestamp_type == 0
                    fields = _differences(expected, actual)
                    if fields:
                        mismatch(
                            {
                                "partition": p,
                                "backup_offset": expected.offset,
                                "target_offset": actual.offset,
                                "fields": fields,
                            }
                        )
                for expected in expected_iter:
                    mismatch(
                        {
                            "partition": p,
                            "backup_offset": expected.offset,
                            "problem": "missing from the topic",
                        }
                    )
        finally:
            await consumer.stop()
    return {
        "command": "verify",
        "file": str(source),
        "source_topic": header.topic,
        "topic": topic,
        "timestamp_type": timestamp_type,
        "records_in_backup": header.records,
        "records_compared": compared,
        "timestamps_compared": timestamps,
        "mismatches": mismatches,
        "examples": examples,
        "ok": mismatches == 0,
    }


# --- CLI -----------------------------------------------------------------------------------


def _parse_start_offsets(text: str) -> dict[int, int]:
    try:
        data = json.loads(text)
        return {int(p): int(o) for p, o in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(
            'expected a JSON object of partition -> offset, e.g. {"0": 12, "1": 0}'
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kraftwerk-topic-backup",
        description="Export a Kafka topic to a file, import it into a topic, verify the two.",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        help="KRAFTWERK_* settings (bootstrap servers, SASL, CA) read from this file as well",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write every record of a topic to a file")
    export.add_argument("--topic", required=True)
    export.add_argument("--output", required=True, type=Path, help="the .jsonl.gz to write")
    imp = sub.add_parser("import", help="write a backup's records into an existing topic")
    imp.add_argument("--input", required=True, type=Path)
    imp.add_argument("--topic", required=True, help="the target topic (must exist)")
    imp.add_argument(
        "--allow-non-empty",
        action="store_true",
        help="append even if the target topic already holds records",
    )
    verify = sub.add_parser("verify", help="compare a backup with a topic, record by record")
    verify.add_argument("--input", required=True, type=Path)
    verify.add_argument("--topic", required=True)
    verify.add_argument(
        "--start-offsets",
        type=_parse_start_offsets,
        help="JSON {partition: offset} to compare from (import's target_start_offsets)",
    )
    return parser


async def run(args: argparse.Namespace, settings: TopicBackupSettings) -> dict[str, Any]:
    if args.command == "export":
        return await export_topic(settings, args.topic, args.output)
    if args.command == "import":
        return await import_topic(settings, args.input, args.topic, args.allow_non_empty)
    return await verify_topic(settings, args.input, args.topic, args.start_offsets)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        settings = TopicBackupSettings(_env_file=args.env_file)
        summary = asyncio.run(run(args, settings))
    except (BackupError, BackupFormatError, KafkaError, OSError, ValidationError) as exc:
        print(f"kraftwerk-topic-backup: error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    print(json.dumps(summary, indent=2))  # noqa: T201
    if summary.get("command") == "verify" and not summary["ok"]:
        return EXIT_MISMATCH
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
