from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from kraftwerk_apps.consumer.dashboard import partition_rows
from kraftwerk_apps.consumer.dlq import dlq_headers
from kraftwerk_apps.consumer.events import Broadcaster, event_stream, sse
from kraftwerk_apps.consumer.history import merge_latest
from kraftwerk_apps.consumer.page import render_page
from kraftwerk_apps.consumer.records import ProcessingError, decode_json_object, display_record


@dataclass
class Rec:
    topic: str = "t"
    partition: int = 1
    offset: int = 7
    timestamp: int = 1000
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
    assert good["key"] == "k"
    assert good["headers"] == {"h": "v"}
    bad = display_record(Rec(value=b"plain text", key=None))
    assert bad["valid_json"] is False
    assert bad["raw"] == "plain text"
    assert bad["key"] is None


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
