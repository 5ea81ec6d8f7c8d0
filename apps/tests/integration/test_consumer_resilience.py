"""The consumer against real-world records and failures, on the real Kafka (no mocks).

Records are written with plain clients (aiokafka, and the Java console producer when the Kafka
jars are at hand), never through the producer app, so that every codec, any bytes and any
headers reach the consumer.  Every wait is for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kraftwerk_apps.common.lifecycle import EXIT_FATAL
from tests.conftest import _create_topics
from tests.kafka_server import KafkaStartError, _java, ensure_libs
from tests.procs import AppProcess, eventually, running_apps, start_app

CODECS = ["gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
DLQ_MAX_MESSAGE_BYTES = 200_000
TRUNCATE_BYTES = 65_536

Headers = list[tuple[str, bytes]]


# --- Kafka helpers ---------------------------------------------------------------------------


async def _produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[int, bytes | None, bytes | None, Headers]],
    compression: str | None = None,
) -> list[tuple[int, int]]:
    """Write (partition, key, value, headers) records in order; their (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=compression,
        linger_ms=20,
        max_request_size=2_000_000,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=v, key=k, headers=h, partition=p)
            for p, k, v, h in records
        ]
        done = [await f for f in futures]
        return [(md.partition, md.offset) for md in done]
    finally:
        await producer.stop()


def produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[int, bytes | None, bytes | None, Headers]],
    compression: str | None = None,
) -> list[tuple[int, int]]:
    return asyncio.run(_produce(bootstrap, topic, records, compression))


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_bytes=5_000_000
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        async with asyncio.timeout(60):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(
                        r for r in records if r.offset < end[TopicPartition(topic, r.partition)]
                    )
        return out
    finally:
        await consumer.stop()


def read_all(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(_read_all(bootstrap, topic))


def dlq_by_source(bootstrap: str, dlq: str, topic: str) -> dict[tuple[int, int], list[Any]]:
    """DLQ records of ``topic`` by (source partition, source offset)."""
    found: dict[tuple[int, int], list[Any]] = {}
    for r in read_all(bootstrap, dlq):
        h = dict(r.headers)
        if h.get("dlq.source.topic") != topic.encode():
            continue
        where = (int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))
        found.setdefault(where, []).append(r)
    return found


# --- app helpers -----------------------------------------------------------------------------


def snapshot(app: AppProcess) -> dict[str, Any]:
    resp = httpx.get(f"{app.url}/messages", timeout=10)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def shown(app: AppProcess) -> dict[tuple[int, int], dict[str, Any]]:
    return {(m["partition"], m["offset"]): m for m in snapshot(app)["messages"]}


def shown_at(app: AppProcess, pos: tuple[int, int]) -> dict[str, Any] | None:
    return shown(app).get(pos)


def metric(app: AppProcess, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` whose labels contain ``labels``."""
    text = httpx.get(f"{app.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not labels or labels in line):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total


def caught_up(app: AppProcess) -> bool:
    """The group committed everything up to the end offsets (lag 0)."""
    data = snapshot(app)
    rows = data["partitions"]
    return (
        len(rows) == PARTITIONS
        and data["total_lag"] == 0
        and all(r["committed"] == r["end_offset"] for r in rows if r["end_offset"])
    )


def all_visible(apps: list[AppProcess], where: list[tuple[int, int]]) -> bool:
    return all(set(where) <= set(shown(app)) for app in apps)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtopics(kafka_bootstrap: str) -> tuple[str, str]:
    """This module's topic (3 partitions) and a DLQ that takes at most 200 kB per record."""
    topic = f"kw-res-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    asyncio.run(
        _create_topics(
            kafka_bootstrap,
            {topic: PARTITIONS, dlq: 1},
            {dlq: {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}},
        )
    )
    return topic, dlq


def _env(bootstrap: str, topic: str, dlq: str, **extra: str) -> dict[str, str]:
    return {
        "KRAFTWERK_BOOTSTRAP_SERVERS": bootstrap,
        "KRAFTWERK_TOPIC": topic,
        "KRAFTWERK_DLQ_TOPIC": dlq,
        "KRAFTWERK_GROUP_ID": f"kw-res-group-{uuid.uuid4().hex[:6]}",
        "KRAFTWERK_CONNECT_BACKOFF_SECONDS": "0.2",
        "KRAFTWERK_CONNECT_BACKOFF_MAX_SECONDS": "1",
        "KRAFTWERK_RETRY_COUNT": "2",
        "KRAFTWERK_RETRY_BACKOFF_SECONDS": "0.1",
        "KRAFTWERK_RETRY_BACKOFF_MAX_SECONDS": "0.2",
        "KRAFTWERK_STATS_INTERVAL_SECONDS": "0.5",
        "KRAFTWERK_LOG_LEVEL": "warning",
        **extra,
    }


@pytest.fixture(scope="module")
def rconsumers(
    kafka_bootstrap: str, rtopics: tuple[str, str], logs: Path
) -> Iterator[list[AppProcess]]:
    """Two consumer instances in one group, with a tiny poll budget (4 s * 0.025 = 0.1 s)."""
    env = _env(
        kafka_bootstrap,
        *rtopics,
        KRAFTWERK_HISTORY_SIZE="100",
        KRAFTWERK_MAX_POLL_INTERVAL_MS="4000",
        KRAFTWERK_POLL_BUDGET_FRACTION="0.025",
        KRAFTWERK_DLQ_TRUNCATE_BYTES=str(TRUNCATE_BYTES),
    )
    with running_apps("consumer", env, logs, 2) as apps:
        yield apps


# --- every codec -----------------------------------------------------------------------------


def test_every_codec_is_shown_everywhere_and_processed(
    kafka_bootstrap: str, rtopics: tuple[str, str], rconsumers: list[AppProcess]
) -> None:
    topic, dlq = rtopics
    marker = uuid.uuid4().hex
    where: dict[tuple[int, int], str] = {}
    for codec in CODECS:
        records: list[tuple[int, bytes | None, bytes | None, Headers]] = [
            (p, None, json.dumps({"codec": codec, "marker": marker, "p": p}).encode(), [])
            for p in range(PARTITIONS)
        ]
        for pos in produce(kafka_bootstrap, topic, records, compression=codec):
            where[pos] = codec

    for app in rconsumers:
        eventually(partial(all_visible, [app], list(where)), 60, f"every codec on {app.url}")
        seen = shown(app)
        for pos, codec in where.items():
            assert seen[pos]["valid_json"], seen[pos]
            assert seen[pos]["value"]["codec"] == codec
            assert seen[pos]["timestamp_type"] == "LogAppendTime"
    eventually(lambda: caught_up(rconsumers[0]), 60, "lag 0 after every codec")
    dead = dlq_by_source(kafka_bootstrap, dlq, topic)
    assert not set(where) & set(dead), "a valid compressed record went to the DLQ"


def test_java_console_producer_every_codec(
    kafka_bootstrap: str, rtopics: tuple[str, str], rconsumers: list[AppProcess]
) -> None:
    """The incident: ``kafka-console-producer --compression-codec lz4`` (the Java client)."""
    try:
        java = _java()
        libs = ensure_libs()
    except KafkaStartError as exc:
        pytest.skip(f"no Java Kafka client here: {exc}")
    topic, _ = rtopics
    marker = uuid.uuid4().hex
    for codec in CODECS:
        lines = "".join(
            json.dumps({"java": codec, "marker": marker, "n": n}) + "\n" for n in range(3)
        )
        result = subprocess.run(
            [
                java,
                "-cp",
                f"{libs}/*",
                "kafka.tools.ConsoleProducer",
                "--bootstrap-server",
                kafka_bootstrap,
                "--topic",
                topic,
                "--compression-codec",
                codec,
                "--producer-property",
                "acks=all",
            ],
            input=lines,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def every_codec_shown(app: AppProcess) -> bool:
        got = {
            (m["value"]["java"], m["value"]["n"])
            for m in snapshot(app)["messages"]
            if m["valid_json"] and m["value"].get("marker") == marker
        }
        return len(got) == len(CODECS) * 3

    for app in rconsumers:
        eventually(partial(every_codec_shown, app), 60, f"Java records on {app.url}")
    eventually(lambda: caught_up(rconsumers[1]), 60, "lag 0 after the Java records")


# --- any bytes, any headers ------------------------------------------------------------------


def test_binary_records_are_shown_and_dead_lettered_with_a_reason(
    kafka_bootstrap: str, rtopics: tuple[str, str], rconsumers: list[AppProcess]
) -> None:
    topic, dlq = rtopics
    marker = uuid.uuid4().hex.encode()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    bin_headers = [("bin", b"\xff\x00"), ("dup", b"1"), ("dup", b"2")]
    records: list[tuple[int, bytes | None, bytes | None, Headers]] = [
        (2, b"\x00\xff\xfe", png, bin_headers),  # binary key, value and header
        (2, b"tomb-" + marker, None, []),  # tombstone
        (2, marker, b"", []),  # empty value
        (2, b"", b'{"ok": "' + marker + b'"}', [("bin", b"\x80")]),  # valid, empty key
        (2, b"\xff" + marker, b'"just a string"', []),  # JSON, not an object
    ]
    pos = produce(kafka_bootstrap, topic, records)

    for app in rconsumers:
        eventually(partial(all_visible, [app], pos), 60, f"binary records on {app.url}")
        seen = shown(app)
        binary, tomb, empty, good, string = (seen[p] for p in pos)
        assert binary["valid_json"] is False
        assert "not UTF-8" in binary["reason"]
        assert (binary["raw_encoding"], base64.b64decode(binary["raw"])) == ("base64", png)
        assert base64.b64decode(binary["key"]) == b"\x00\xff\xfe"
        assert binary["key_encoding"] == "base64"
        assert binary["headers"] == [
            {"name": "bin", "value": base64.b64encode(b"\xff\x00").decode(), "encoding": "base64"},
            {"name": "dup", "value": "1", "encoding": "utf-8"},
            {"name": "dup", "value": "2", "encoding": "utf-8"},
        ]
        assert "tombstone" in tomb["reason"]
        assert tomb["raw"] is None
        assert empty["reason"] == "value is empty"
        assert good["valid_json"] is True
        assert good["key"] == ""
        assert "not an object" in string["reason"]
        page = httpx.get(f"{app.url}/", timeout=10).text
        assert "not JSON: " in page

    def dead_lettered() -> dict[tuple[int, int], list[Any]] | None:
        dead = dlq_by_source(kafka_bootstrap, dlq, topic)
        wanted = [pos[0], pos[1], pos[2], pos[4]]
        return dead if all(p in dead for p in wanted) else None

    eventually(dead_lettered, 60, "the undecodable records in the DLQ")
    eventually(lambda: caught_up(rconsumers[0]), 60, "lag 0 after the binary records")
    dead = dlq_by_source(kafka_bootstrap, dlq, topic)
    assert pos[3] not in dead  # the valid one was processed
    for p in (pos[0], pos[1], pos[2], pos[4]):
        assert len(dead[p]) == 1, f"{p} dead-lettered {len(dead[p])} times"
    copy = dead[pos[0]][0]
    headers = copy.headers
    assert (copy.key, copy.value) == (b"\x00\xff\xfe", png)
    assert [h for h in headers if not h[0].startswith("dlq.")] == bin_headers
    h = dict(headers)
    assert h["dlq.attempts"] == b"1"
    assert b"not UTF-8" in h["dlq.reason"]
    assert h["dlq.source.partition"] == b"2"
    tomb_copy = dead[pos[1]][0]
    assert tomb_copy.value is None
    assert b"tombstone" in dict(tomb_copy.headers)["dlq.reason"]


def test_record_too_large_for_the_dlq_goes_there_truncated(
    kafka_bootstrap: str, rtopics: tuple[str, str], rconsumers: list[AppProcess]
) -> None:
    topic, dlq = rtopics
    value = b"<not json>" + b"x" * 499_990  # 500 kB: fits the topic, not the DLQ (200 kB)
    [pos] = produce(kafka_bootstrap, topic, [(1, b"big", value, [("trace", b"t1")])])

    def truncated_copy() -> Any:
        return dlq_by_source(kafka_bootstrap, dlq, topic).get(pos)

    [copy] = eventually(truncated_copy, 60, "the truncated DLQ record")
    h = dict(copy.headers)
    assert h["dlq.truncated"] == b"500000"
    assert copy.value == value[:TRUNCATE_BYTES]
    assert copy.key == b"big"
    assert h["trace"] == b"t1"
    assert b"not valid JSON" in h["dlq.reason"]
    for app in rconsumers:
        m = eventually(partial(shown_at, app, pos), 60, f"the big record on {app.url}")
        assert m["raw_truncated"] is True
        assert m["size"] == 500_000
    assert sum(metric(a, "kraftwerk_consumer_dlq_truncated_total") for a in rconsumers) == 1


# --- idempotency keys ------------------------------------------------------------------------


def test_a_repeated_idempotency_key_is_shown_and_processed_once(
    kafka_bootstrap: str, rtopics: tuple[str, str], rconsumers: list[AppProcess]
) -> None:
    topic, _ = rtopics
    marker = uuid.uuid4().hex
    key_a = [("idempotency-key", f"a-{marker}".encode())]
    key_b = [("idempotency-key", f"b-{marker}".encode())]

    def value(name: str) -> bytes:
        return json.dumps({"idem": marker, "copy": name}).encode()

    records: list[tuple[int, bytes | None, bytes | None, Headers]] = [
        (1, None, value("a1"), key_a),
        (1, None, value("a2"), key_a),  # same partition: one group member sees both
        (0, None, value("b1"), key_b),
        (2, None, value("b2"), key_b),  # other partition, later append time
        (1, None, value("c"), []),  # no header: never deduplicated
        (1, None, value("c"), []),
    ]
    before = [
        metric(a, "kraftwerk_consumer_duplicates_dropped_total", 'reader="history"')
        for a in rconsumers
    ]
    # one write at a time, so that the broker's append times follow this order
    pos = [produce(kafka_bootstrap, topic, [r])[0] for r in records]
    # A record after them in every partition: once those are shown, the repeats were read.
    fences = produce(
        kafka_bootstrap,
        topic,
        [(p, None, json.dumps({"fence": marker}).encode(), []) for p in range(PARTITIONS)],
    )
    for app, dropped_before in zip(rconsumers, before, strict=True):
        eventually(partial(all_visible, [app], fences), 60, f"the fences on {app.url}")
        copies = sorted(
            m["value"]["copy"]
            for m in snapshot(app)["messages"]
            if m["valid_json"] and m["value"].get("idem") == marker
        )
        assert copies == ["a1", "b1", "c", "c"]
        assert set(shown(app)) >= {pos[0], pos[2], pos[4], pos[5]}
        dropped = metric(app, "kraftwerk_consumer_duplicates_dropped_total", 'reader="history"')
        assert dropped - dropped_before == 2  # a2 and b2
        assert snapshot(app)["duplicates_dropped_here"]["history"] == dropped
    eventually(lambda: caught_up(rconsumers[0]), 60, "lag 0 after the repeats")
    group_drops = sum(snapshot(a)["duplicates_dropped_here"]["group"] for a in rconsumers)
    assert group_drops >= 1  # a2 (same partition, same member); b2 only if b1's member has it
    assert (
        sum(
            metric(a, "kraftwerk_consumer_duplicates_dropped_total", 'reader="group"')
            for a in rconsumers
        )
        == group_drops
    )


# --- a poison run ----------------------------------------------------------------------------


def test_a_poison_run_reaches_the_dlq_once_each_and_the_group_moves_on(
    kafka_bootstrap: str, rtopics: tuple[str, str], rconsumers: list[AppProcess]
) -> None:
    topic, dlq = rtopics
    marker = uuid.uuid4().hex
    n = 200
    poison: list[tuple[int, bytes | None, bytes | None, Headers]] = [
        (0, None, f"poison {marker} {i}: not JSON".encode(), []) for i in range(n)
    ]
    positions = produce(kafka_bootstrap, topic, poison, compression="lz4")
    [(_, good)] = produce(kafka_bootstrap, topic, [(0, None, b'{"after": "poison"}', [])])

    def committed_past() -> bool:
        rows = {r["partition"]: r for r in snapshot(rconsumers[0])["partitions"]}
        return (rows[0]["committed"] or 0) > good

    eventually(committed_past, 90, "the group to commit the good record after the poison run")
    dead = dlq_by_source(kafka_bootstrap, dlq, topic)
    counts = Counter({p: len(dead.get(p, [])) for p in positions})
    assert sum(1 for c in counts.values() if c) == n, "poison records missing in the DLQ"
    assert max(counts.values()) == 1, [p for p, c in counts.items() if c > 1][:5]
    assert all(dict(r.headers)["dlq.attempts"] == b"1" for p in positions for r in dead[p])
    # Handling 200 DLQ writes took longer than the 0.1 s budget: it was used up and the rest
    # polled again - still without a duplicate.
    exceeded = sum(metric(a, "kraftwerk_consumer_poll_budget_exceeded_total") for a in rconsumers)
    assert exceeded >= 1
    eventually(lambda: caught_up(rconsumers[1]), 60, "lag 0 after the poison run")
    for app in rconsumers:
        assert httpx.get(f"{app.url}/readyz", timeout=10).status_code == 200


# --- a fatal failure -------------------------------------------------------------------------


def test_a_dlq_that_refuses_the_record_is_fatal_then_a_restart_redelivers(
    kafka_bootstrap: str, logs: Path
) -> None:
    """The DLQ refuses even the truncated record (max.message.bytes=512): the worker stops,
    /readyz says why, the process exits non-zero, the offset is not committed; after a
    restart with a working DLQ the same record is dead-lettered."""
    topic = f"kw-fatal-{uuid.uuid4().hex[:8]}"
    tiny_dlq, good_dlq = f"{topic}.tiny-dlq", f"{topic}.dlq"
    asyncio.run(
        _create_topics(
            kafka_bootstrap,
            {topic: 1, tiny_dlq: 1, good_dlq: 1},
            {tiny_dlq: {"max.message.bytes": "512"}},
        )
    )
    env = _env(
        kafka_bootstrap,
        topic,
        tiny_dlq,
        KRAFTWERK_DLQ_RETRY_COUNT="1",
        KRAFTWERK_DLQ_TRUNCATE_BYTES="1024",
        KRAFTWERK_FATAL_EXIT_DELAY_SECONDS="3",
    )
    app = start_app("consumer", env, logs)
    try:
        app.wait_http("/readyz", 200)
        [(_, offset)] = produce(kafka_bootstrap, topic, [(0, b"k", b"x" * 5000, [])])

        def fatal() -> str | None:
            resp = httpx.get(f"{app.url}/readyz", timeout=5)
            reason = resp.json().get("reason") or ""
            return reason if resp.status_code == 503 and reason.startswith("fatal:") else None

        reason = eventually(fatal, 60, "/readyz to report the fatal error", every=0.1)
        assert "group-worker" in reason
        assert "DlqWriteError" in reason
        assert app.wait_exit(60) == EXIT_FATAL
        assert "exiting after a fatal error" in app.log()
    finally:
        app.stop()

    restarted = start_app("consumer", {**env, "KRAFTWERK_DLQ_TOPIC": good_dlq}, logs)
    try:
        restarted.wait_http("/readyz", 200)

        def redelivered() -> list[Any] | None:
            return dlq_by_source(kafka_bootstrap, good_dlq, topic).get((0, offset))

        [copy] = eventually(redelivered, 60, "the record in the working DLQ after the restart")
        assert copy.value == b"x" * 5000
        rows = eventually(
            lambda: [r for r in snapshot(restarted)["partitions"] if r["committed"] == offset + 1],
            30,
            "the offset committed after the restart",
        )
        assert rows
    finally:
        restarted.stop()
