from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    TopicAuthorizationFailedError,
)

from kraftwerk_apps.common import lifecycle
from kraftwerk_apps.common.kafka import is_transient, missing_codecs, poll_with_retry
from kraftwerk_apps.common.lifecycle import TaskSupervisor
from kraftwerk_apps.consumer import processing
from kraftwerk_apps.consumer.app import SafeJSONResponse
from kraftwerk_apps.consumer.dashboard import partition_rows
from kraftwerk_apps.consumer.dedupe import DedupeWindow, Seen
from kraftwerk_apps.consumer.dlq import DlqWriteError, DlqWriter, build_dlq_record, dlq_headers
from kraftwerk_apps.consumer.events import Broadcaster, event_stream, sse
from kraftwerk_apps.consumer.history import drop_repeats, merge_latest
from kraftwerk_apps.consumer.page import render_page
from kraftwerk_apps.consumer.processing import (
    GroupWorker,
    PollBudget,
    default_handler,
    rewind_positions,
)
from kraftwerk_apps.consumer.records import (
    RAW_DISPLAY_BYTES,
    ProcessingError,
    decode_json_object,
    display_record,
    idempotency_key,
    show_bytes,
)
from kraftwerk_apps.consumer.settings import ConsumerSettings


@dataclass
class Rec:
    topic: str = "t"
    partition: int = 1
    offset: int = 7
    timestamp: int = 1000
    timestamp_type: int = 1
    key: bytes | None = b"k"
    value: bytes | None = b'{"a": 1}'
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _m(p: int, o: int, ts: int) -> dict[str, int]:
    return {"partition": p, "offset": o, "timestamp": ts}


def test_merge_latest_orders_dedups_and_trims() -> None:
    current = [_m(0, 0, 10), _m(1, 0, 20)]
    new = [_m(1, 0, 20), _m(0, 1, 30), _m(2, 0, 5), _m(2, 1, 40)]
    out = merge_latest(current, new, 3)
    assert [(m["partition"], m["offset"]) for m in out] == [(1, 0), (0, 1), (2, 1)]


def test_merge_latest_is_order_independent() -> None:
    items = [_m(p, o, (o * 7 + p) % 5) for p in range(3) for o in range(6)]
    a = merge_latest([], items, 10)
    b: list[dict[str, int]] = []
    for item in reversed(items):  # different arrival order, one by one
        b = merge_latest(b, [item], 10)
    assert a == b


def test_decode_json_object() -> None:
    assert decode_json_object(b'{"a": 1}') == {"a": 1}
    for bad in (b"nope", b"[1]", None, b"\xff"):
        with pytest.raises(ProcessingError):
            decode_json_object(bad)


def test_display_record() -> None:
    good = display_record(Rec(headers=[("h", b"v")]))
    assert good["value"] == {"a": 1}
    assert good["valid_json"] is True
    assert good["reason"] is None
    assert good["key"] == "k"
    assert good["key_encoding"] == "utf-8"
    assert good["headers"] == [{"name": "h", "value": "v", "encoding": "utf-8"}]
    assert good["timestamp_type"] == "LogAppendTime"
    bad = display_record(Rec(value=b"plain text", key=None))
    assert bad["valid_json"] is False
    assert bad["raw"] == "plain text"
    assert bad["raw_encoding"] == "utf-8"
    assert "not valid JSON" in bad["reason"]
    assert bad["key"] is None
    assert bad["key_encoding"] is None


def test_dlq_headers() -> None:
    headers = dict(dlq_headers(Rec(headers=[("orig", b"1")]), "bad json", 4, "g"))
    assert headers["dlq.reason"] == b"bad json"
    assert headers["dlq.source.topic"] == b"t"
    assert headers["dlq.source.partition"] == b"1"
    assert headers["dlq.source.offset"] == b"7"
    assert headers["dlq.attempts"] == b"4"
    assert headers["dlq.consumer.group"] == b"g"
    assert headers["orig"] == b"1"


def test_partition_rows() -> None:
    rows = partition_rows([0, 1, 2], {0: 10, 1: 5}, {0: 7}, {1})
    assert rows[0] == {
        "partition": 0,
        "committed": 7,
        "end_offset": 10,
        "lag": 3,
        "assigned_here": False,
    }
    assert rows[1]["lag"] == 5
    assert rows[1]["assigned_here"] is True
    assert rows[2]["lag"] is None


def test_render_page_is_self_contained_and_escaped() -> None:
    snap = {
        "topic": "<t>",
        "group": "g",
        "history_size": 10,
        "instance": "i",
        "messages": [{"value": {"x": "</script><script>alert(1)</script>"}}],
        "partitions": [],
        "total_lag": 0,
    }
    page = render_page(snap, "/consumer/")
    assert "</script><script>alert" not in page
    assert "&lt;t&gt;" in page
    assert '"/consumer" + "/events"' not in page  # BASE is a JS value
    assert 'const BASE = "/consumer";' in page
    assert "EventSource" in page
    assert "http://" not in page  # no external assets
    assert "https://" not in page


async def test_event_stream_initial_keepalive_and_publish() -> None:
    hub = Broadcaster()
    stream = event_stream(hub, lambda: sse("snapshot", {"n": 0}), keepalive_seconds=0.05)
    assert (await anext(stream)).startswith("retry:")
    first = await anext(stream)
    assert first.startswith("event: snapshot\n")
    assert json.loads(first.split("data: ", 1)[1]) == {"n": 0}
    assert await anext(stream) == ": keep-alive\n\n"
    assert hub.subscribers == 1
    hub.publish(sse("snapshot", {"n": 1}))
    assert '"n":1' in await anext(stream)
    await stream.aclose()
    assert hub.subscribers == 0


async def test_broadcaster_drops_oldest_for_slow_clients() -> None:
    hub = Broadcaster()
    queue = hub.subscribe()
    for i in range(20):
        hub.publish(str(i))
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    assert items[-1] == "19"
    assert len(items) <= 8
    await asyncio.sleep(0)


# --- records: any bytes are shown, never raise -------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"", "value is empty"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),  # UTF-16 JSON: not accepted
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": 1e400}', "out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'"text"', "not an object (str)"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # BOM
    ],
)
def test_decode_json_object_reasons(value: bytes | None, reason: str) -> None:
    with pytest.raises(ProcessingError, match=re.escape(reason)):
        decode_json_object(value)


def test_display_record_binary_key_value_and_headers() -> None:
    rec = Rec(
        key=b"\x00\xff",
        value=b"\x89PNG\r\n\x1a\n\x00",
        headers=[("h", b"\xff"), ("h", b"two"), ("empty", b""), ("null", None)],  # type: ignore[list-item]
        timestamp_type=0,
    )
    shown = display_record(rec)
    assert shown["valid_json"] is False
    assert "not UTF-8" in shown["reason"]
    assert shown["raw_encoding"] == "base64"
    assert base64.b64decode(shown["raw"]) == rec.value
    assert (shown["key"], shown["key_encoding"]) == (
        base64.b64encode(b"\x00\xff").decode(),
        "base64",
    )
    assert shown["headers"] == [
        {"name": "h", "value": "/w==", "encoding": "base64"},
        {"name": "h", "value": "two", "encoding": "utf-8"},
        {"name": "empty", "value": "", "encoding": "utf-8"},
        {"name": "null", "value": None, "encoding": None},
    ]
    assert shown["timestamp_type"] == "CreateTime"
    json.dumps(shown, allow_nan=False)  # serialisable


def test_display_record_tombstone_empty_and_large() -> None:
    tomb = display_record(Rec(value=None, key=b""))
    assert tomb["valid_json"] is False
    assert "tombstone" in tomb["reason"]
    assert tomb["raw"] is None
    assert tomb["key"] == ""
    big = display_record(Rec(value=("é" * 5000).encode()))
    assert big["raw_truncated"] is True
    assert big["size"] == 10_000
    assert big["raw_encoding"] == "utf-8"  # cut on a character boundary
    assert len(big["raw"].encode()) <= RAW_DISPLAY_BYTES


def test_show_bytes() -> None:
    assert show_bytes(None) == (None, None)
    assert show_bytes(b"abc") == ("abc", "utf-8")
    assert show_bytes(b"\xc3\xa9\xc3\xa9", limit=3) == ("é", "utf-8")
    assert show_bytes(b"\xff\xfe", limit=1) == ("/w==", "base64")


def test_idempotency_key_first_header_counts() -> None:
    assert idempotency_key(Rec()) is None
    assert idempotency_key(Rec(headers=[("idempotency-key", b"")])) is None
    rec = Rec(headers=[("x", b"1"), ("idempotency-key", b"k1"), ("idempotency-key", b"k2")])
    assert idempotency_key(rec) == b"k1"


def test_safe_json_response_escapes_lone_surrogates() -> None:
    body = bytes(SafeJSONResponse({"v": "\ud800", "e": "é"}).body)
    assert json.loads(body) == {"v": "\ud800", "e": "é"}


def test_page_shows_not_json_with_reason() -> None:
    page = render_page(
        {"topic": "t", "group": "g", "history_size": 1, "messages": [], "partitions": []}, ""
    )
    assert '"not JSON: " + m.reason' in page
    assert 'm.timestamp_type !== "LogAppendTime"' in page  # CreateTime is pointed out


# --- dedupe window --------------------------------------------------------------------------


def test_dedupe_window_repeats_within_window_only() -> None:
    w = DedupeWindow(window_seconds=10, max_keys=100)
    assert not w.is_repeat(b"k", Seen(1_000, 0, 1))
    assert w.is_repeat(b"k", Seen(5_000, 1, 7))  # other partition, within 10 s
    assert not w.is_repeat(b"k", Seen(1_000, 0, 1))  # the same record again: re-delivery
    assert not w.is_repeat(b"other", Seen(5_000, 0, 2))
    assert not w.is_repeat(b"k", Seen(11_001, 0, 3))  # 10.001 s later: outside the window
    assert w.is_repeat(b"k", Seen(12_000, 2, 0))  # ... and it opened a new window


def test_dedupe_window_bounds_and_disabled() -> None:
    w = DedupeWindow(window_seconds=60, max_keys=3)
    for i in range(5):
        w.remember(str(i).encode(), Seen(i, 0, i))
    assert len(w) == 3
    assert not w.is_repeat(b"0", Seen(10, 1, 0))  # forgotten (oldest first)
    w.remember(b"late", Seen(120_000, 0, 99))  # newest record 120 s: older ones expire
    assert len(w) == 1
    off = DedupeWindow(window_seconds=0, max_keys=10)
    assert not off.is_repeat(b"k", Seen(1, 0, 0))
    assert not off.is_repeat(b"k", Seen(1, 0, 1))
    assert len(off) == 0


def _item(p: int, o: int, ts: int) -> dict[str, Any]:
    return {"partition": p, "offset": o, "timestamp": ts}


def test_drop_repeats_keeps_the_first_in_page_order() -> None:
    w = DedupeWindow(window_seconds=600, max_keys=100)
    current, new, dropped = drop_repeats(
        w, [], [(b"k", _item(1, 5, 2_000)), (None, _item(0, 0, 1_000)), (b"k", _item(2, 0, 2_500))]
    )
    assert dropped == 1
    assert [(m["partition"], m["offset"]) for m in new] == [(0, 0), (1, 5)]
    current = merge_latest(current, new, 10)
    # A copy that precedes the kept one (arrived late from a lagging partition) replaces it.
    current, new, dropped = drop_repeats(w, current, [(b"k", _item(0, 9, 1_500))])
    assert dropped == 1
    assert [(m["partition"], m["offset"]) for m in current] == [(0, 0)]
    assert [(m["partition"], m["offset"]) for m in new] == [(0, 9)]
    # Records without the header are never deduplicated.
    _, new, dropped = drop_repeats(w, [], [(None, _item(0, 1, 1)), (None, _item(0, 1, 1))])
    assert (len(new), dropped) == (2, 0)


# --- poll budget ----------------------------------------------------------------------------


def test_poll_budget_with_a_clock() -> None:
    now = [100.0]
    budget = PollBudget(2.0, clock=lambda: now[0])
    assert not budget.exceeded()
    assert budget.remaining() == 2.0
    now[0] = 101.9
    assert not budget.exceeded()
    now[0] = 102.0
    assert budget.exceeded()
    assert budget.remaining() == 0.0


def test_rewind_positions() -> None:
    a, b, c = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)
    batches = {
        a: [Rec(partition=0, offset=o) for o in (3, 4, 5)],
        b: [Rec(partition=1, offset=o) for o in (10, 12)],  # gap (compaction)
        c: [Rec(partition=2, offset=7)],
    }
    assert rewind_positions(batches, {a: 5}) == {a: 5, b: 10, c: 7}
    assert rewind_positions(batches, {a: 6, b: 11}) == {b: 11, c: 7}
    assert rewind_positions(batches, {a: 6, b: 13, c: 8}) == {}


# --- DLQ record -------------------------------------------------------------------------------


def test_dlq_record_truncated_with_markers() -> None:
    big_headers = [(f"h{i}", b"x" * 1000) for i in range(40)]
    rec = Rec(key=b"k" * 5000, value=b"v" * 2_000_000, headers=[("dlq.old", b"1"), *big_headers])
    full = build_dlq_record(rec, "too big", 1, "g")
    assert full.value == rec.value
    assert full.key == rec.key
    assert "dlq.truncated" not in dict(full.headers)
    cut = build_dlq_record(rec, "too big", 1, "g", truncate_to=1024)
    headers = dict(cut.headers)
    assert cut.value == b"v" * 1024
    assert cut.key == b"k" * 1024
    assert headers["dlq.truncated"] == b"2000000"
    assert headers["dlq.truncated.key"] == b"5000"
    kept = [k for k, _ in cut.headers if k.startswith("h")]
    assert 0 < len(kept) < 40
    assert headers["dlq.truncated.headers"] == str(40 - len(kept)).encode()
    assert "dlq.old" not in headers
    assert headers["dlq.reason"] == b"too big"
    assert headers["dlq.source.offset"] == b"7"


def test_dlq_record_truncated_tombstone_and_long_reason() -> None:
    cut = build_dlq_record(Rec(value=None), "r" * 10_000, 2, "g", truncate_to=1024)
    headers = dict(cut.headers)
    assert cut.value is None
    assert headers["dlq.truncated"] == b"0"
    assert len(headers["dlq.reason"]) == 2000
    assert headers["dlq.attempts"] == b"2"


# --- group worker: retries, DLQ, dedupe, budget (fake consumer and DLQ) --------------------


class FakeDlq:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, int]] = []

    async def start(self) -> None:
        return None

    async def send(self, record: Any, reason: str, attempts: int) -> None:
        self.sent.append((record.offset, reason, attempts))


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: dict[TopicPartition, int] = {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset


def _worker(handler: Any, **overrides: Any) -> tuple[GroupWorker, FakeDlq]:
    settings = ConsumerSettings(
        retry_count=2, retry_backoff_seconds=0, retry_backoff_max_seconds=0, **overrides
    )
    dlq = FakeDlq()
    return GroupWorker(settings, cast(DlqWriter, dlq), handler), dlq


async def test_worker_permanent_errors_go_to_dlq_once_transient_are_retried() -> None:
    calls: dict[int, int] = {}

    async def handler(record: Any) -> None:
        calls[record.offset] = calls.get(record.offset, 0) + 1
        if record.offset == 1:
            decode_json_object(record.value)
        if record.offset == 2:
            raise KafkaConnectionError("broker gone")
        if record.offset == 3 and calls[3] < 2:
            raise TimeoutError

    worker, dlq = _worker(handler)
    consumer = FakeConsumer()
    tp = TopicPartition("t", 0)
    records = [Rec(partition=0, offset=o, value=b"x" if o == 1 else b"{}") for o in range(4)]
    await worker._handle_poll(cast(Any, consumer), {tp: records})
    assert calls == {0: 1, 1: 1, 2: 3, 3: 2}
    assert [(o, n) for o, _, n in dlq.sent] == [(1, 1), (2, 3)]
    assert "not valid JSON" in dlq.sent[0][1]
    assert "KafkaConnectionError" in dlq.sent[1][1]
    assert consumer.commits == [{tp: 4}]
    assert (worker.processed, worker.dead_lettered) == (2, 2)


async def test_worker_drops_repeated_idempotency_keys() -> None:
    seen: list[int] = []

    async def handler(record: Any) -> None:
        seen.append(record.offset)

    worker, _ = _worker(handler)
    consumer = FakeConsumer()
    tp = TopicPartition("t", 0)
    hk = [("idempotency-key", b"abc")]
    records = [
        Rec(partition=0, offset=0, headers=hk),
        Rec(partition=0, offset=1, headers=hk),
        Rec(partition=0, offset=2),
        Rec(partition=0, offset=3),
    ]
    await worker._handle_poll(cast(Any, consumer), {tp: records})
    await worker._handle_poll(cast(Any, consumer), {tp: records[:1]})  # re-delivery
    assert seen == [0, 2, 3, 0]
    assert worker.duplicates == 1


async def test_worker_budget_commits_handled_and_seeks_back_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(
        processing, "PollBudget", lambda seconds: PollBudget(seconds, clock=lambda: now[0])
    )

    async def slow(record: Any) -> None:
        now[0] += 0.2  # each record takes 0.2 s (on the fake clock)

    # budget = 1000 ms * 0.3 = 0.3 s: records 0 and 1 are handled (at 0 s and 0.2 s)
    worker, _ = _worker(slow, max_poll_interval_ms=1000, poll_budget_fraction=0.3)
    consumer = FakeConsumer()
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    batches = {
        a: [Rec(partition=0, offset=o) for o in range(5)],
        b: [Rec(partition=1, offset=o) for o in range(20, 22)],
    }
    await worker._handle_poll(cast(Any, consumer), batches)
    assert consumer.commits == [{a: 2}]
    assert consumer.seeks == {a: 2, b: 20}


async def test_worker_commits_progress_before_a_fatal_dlq_error() -> None:
    class BrokenDlq(FakeDlq):
        async def send(self, record: Any, reason: str, attempts: int) -> None:
            raise DlqWriteError("gone")

    worker = GroupWorker(ConsumerSettings(), cast(DlqWriter, BrokenDlq()), default_handler)
    consumer = FakeConsumer()
    tp = TopicPartition("t", 0)
    records = [Rec(partition=0, offset=0), Rec(partition=0, offset=1, value=b"nope")]
    with pytest.raises(DlqWriteError):
        await worker._handle_poll(cast(Any, consumer), {tp: records})
    assert consumer.commits == [{tp: 1}]  # the failed record is not committed


def test_is_transient() -> None:
    assert is_transient(TimeoutError())
    assert is_transient(KafkaTimeoutError())
    assert is_transient(KafkaConnectionError())
    assert is_transient(NotEnoughReplicasError())
    assert not is_transient(ProcessingError("x"))
    assert not is_transient(MessageSizeTooLargeError())
    assert not is_transient(ValueError())


def test_all_codecs_available() -> None:
    assert missing_codecs() == []


# --- task supervisor -------------------------------------------------------------------------


@pytest.fixture
def clean_lifecycle() -> Iterator[None]:
    lifecycle.reset()
    yield
    lifecycle.reset()


@pytest.mark.usefixtures("clean_lifecycle")
async def test_supervisor_crash_is_fatal_and_requests_shutdown() -> None:
    stopped = asyncio.Event()
    sup = TaskSupervisor(exit_delay=0.3, on_fatal=stopped.set)

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def crash() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def connect_once() -> None:
        return None

    sup.start("loop", forever())
    connect = sup.start("connect", connect_once(), may_return=True)
    worker = sup.start("worker", crash())
    await asyncio.wait([connect, worker])
    await asyncio.sleep(0)  # done callbacks run soon after the task ends
    assert sup.readiness() == "fatal: background task 'worker' crashed: RuntimeError('boom')"
    assert lifecycle.fatal_reason() == sup.fatal_reason
    assert not stopped.is_set()  # /readyz says 503 for exit_delay first
    await asyncio.wait_for(stopped.wait(), 1)
    await sup.stop()
    assert sup.tasks["loop"].cancelled()


@pytest.mark.usefixtures("clean_lifecycle")
async def test_supervisor_return_of_a_loop_is_fatal_stop_is_not() -> None:
    calls: list[str] = []
    sup = TaskSupervisor(exit_delay=0, on_fatal=lambda: calls.append("stop"))

    async def returns() -> None:
        return None

    await asyncio.wait([sup.start("stats", returns())])
    await asyncio.sleep(0)
    assert sup.fatal_reason == "background task 'stats' stopped unexpectedly"
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == ["stop"]

    quiet = TaskSupervisor(exit_delay=0, on_fatal=lambda: calls.append("quiet"))
    quiet.start("loop", asyncio.sleep(3600))
    await quiet.stop()
    assert quiet.fatal_reason is None
    assert calls == ["stop"]


@pytest.mark.usefixtures("clean_lifecycle")
def test_request_shutdown_uses_the_installed_handler() -> None:
    calls: list[int] = []
    lifecycle.set_shutdown_handler(lambda: calls.append(1))
    lifecycle.request_shutdown()
    assert calls == [1]
    lifecycle.set_shutdown_handler(None)
    lifecycle.request_shutdown()  # no handler: only logged
    assert calls == [1]


# --- DLQ writer: bounded retries, truncation (fake producer) ---------------------------------


class FakeProducer:
    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any:
        self.calls.append((key, value, dict(headers)))
        if self.errors:
            raise self.errors.pop(0)
        return Rec(partition=0, offset=len(self.calls))


def _dlq_writer(producer: FakeProducer) -> DlqWriter:
    settings = ConsumerSettings(
        dlq_retry_count=2,
        retry_backoff_seconds=0,
        retry_backoff_max_seconds=0,
        dlq_truncate_bytes=2048,
    )
    writer = DlqWriter(settings)
    writer._producer = cast(Any, producer)
    return writer


async def test_dlq_writer_retries_transient_errors_with_a_limit() -> None:
    ok = FakeProducer([KafkaConnectionError(), KafkaTimeoutError()])
    await _dlq_writer(ok).send(Rec(), "bad", 1)
    assert len(ok.calls) == 3
    down = FakeProducer([KafkaConnectionError() for _ in range(10)])
    with pytest.raises(DlqWriteError, match="after 3 attempt"):
        await _dlq_writer(down).send(Rec(), "bad", 1)
    assert len(down.calls) == 3  # 1 + dlq_retry_count, then it gives up loudly
    denied = FakeProducer([TopicAuthorizationFailedError()])
    with pytest.raises(DlqWriteError):
        await _dlq_writer(denied).send(Rec(), "bad", 1)
    assert len(denied.calls) == 1  # not retriable: no retry


async def test_dlq_writer_truncates_a_record_too_large() -> None:
    big = Rec(value=b"v" * 10_000)
    once = FakeProducer([MessageSizeTooLargeError()])
    await _dlq_writer(once).send(big, "bad", 1)
    (_, first, _), (_, second, headers) = once.calls
    assert first == big.value
    assert second == b"v" * 2048
    assert headers["dlq.truncated"] == b"10000"
    never = FakeProducer([MessageSizeTooLargeError(), MessageSizeTooLargeError()])
    with pytest.raises(DlqWriteError, match="too large even truncated"):
        await _dlq_writer(never).send(big, "bad", 1)


def test_page_script_is_valid_javascript(tmp_path: Path) -> None:
    """The inline script must parse (a raw newline in a JS string literal once broke it)."""
    page = render_page(
        {"topic": "t", "group": "g", "history_size": 1, "messages": [], "partitions": []}, ""
    )
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    assert 'join("\\n")' in script
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    path = tmp_path / "page.js"
    path.write_text(script)
    check = subprocess.run(
        [node, "--check", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


class _FlakyPoller:
    """getmany() raises the given errors in turn, then returns one batch."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"tp": [timeout_ms, max_records]}


async def test_poll_retries_transient_errors_then_returns() -> None:
    poller = _FlakyPoller([TimeoutError(), ConnectionError()])
    got = await poll_with_retry(
        poller, "t", timeout_ms=5, max_records=7, retries=2, backoff=0, backoff_max=0
    )
    assert got == {"tp": [5, 7]}
    assert poller.calls == 3


async def test_poll_gives_up_after_the_retries_and_never_retries_a_permanent_error() -> None:
    poller = _FlakyPoller([TimeoutError(), TimeoutError(), TimeoutError()])
    with pytest.raises(TimeoutError):
        await poll_with_retry(
            poller, "t", timeout_ms=5, max_records=7, retries=2, backoff=0, backoff_max=0
        )
    assert poller.calls == 3
    poller = _FlakyPoller([ValueError("bug")])
    with pytest.raises(ValueError, match="bug"):
        await poll_with_retry(
            poller, "t", timeout_ms=5, max_records=7, retries=2, backoff=0, backoff_max=0
        )
    assert poller.calls == 1
