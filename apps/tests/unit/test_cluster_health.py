"""GET /cluster-health against a tiny real HTTP server that answers like Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kraftwerk_apps.consumer.app import create_app
from kraftwerk_apps.consumer.cluster_health import QUERIES, ClusterHealth, health_state
from kraftwerk_apps.consumer.page import render_page
from kraftwerk_apps.consumer.settings import ConsumerSettings

HEALTHY = {
    "brokers_up": "3",
    "brokers_total": "3",
    "under_replicated": "0",
    "under_min_isr": "0",
    "messages_in_per_sec": "12.3456",
    "consumer_lag": "42",
}


def vector(value: str | None) -> dict[str, Any]:
    result = [] if value is None else [{"metric": {}, "value": [1700000000.123, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def alert(name: str, severity: str, instance: str, state: str = "firing") -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "instance": instance, "job": "kafka"},
        "annotations": {"summary": "..."},
        "state": state,
        "activeAt": "2024-01-01T00:00:00Z",
        "value": "1e+00",
    }


@dataclass
class FakePrometheus:
    """What the stub answers: a value (or None: empty result) per query name, the alerts;
    ``broken`` query names answer 400 like Prometheus does for a bad query."""

    values: dict[str, str | None] = field(default_factory=lambda: dict(HEALTHY))
    alerts: list[dict[str, Any]] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, query: str | None) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(query or path)
        if self.delay:
            time.sleep(self.delay)
        if path == "/prom/api/v1/alerts":
            return 200, {"status": "success", "data": {"alerts": self.alerts}}
        if path != "/prom/api/v1/query":
            return 404, {"status": "error", "error": "not found"}
        names = [n for n, q in QUERIES.items() if q == query]
        if not names:
            return 400, {"status": "error", "errorType": "bad_data", "error": f"unknown {query}"}
        if names[0] in self.broken:
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error at 1"}
        return 200, vector(self.values.get(names[0]))


@pytest.fixture
def prometheus() -> Iterator[tuple[FakePrometheus, str]]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query).get("query", [None])[0]
            status, body = fake.answer(parts.path, query)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://user:secret@127.0.0.1:{server.server_address[1]}/prom/"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_for(url: str, **settings: Any) -> TestClient:
    # Not entered as a context manager: no lifespan, so no Kafka clients are started.
    return TestClient(create_app(ConsumerSettings(prometheus_url=url, **settings)))


def test_healthy_cluster(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.alerts = [alert("KafkaCertificateExpiresSoon", "warning", "kafka1", "pending")]
    resp = client_for(url).get("/cluster-health")
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    fetched_at = body.pop("fetched_at")
    assert abs(fetched_at - time.time()) < 60
    port = urlsplit(url).port
    assert body == {
        "brokers_up": 3,
        "brokers_total": 3,
        "under_replicated": 0,
        "under_min_isr": 0,
        "messages_in_per_sec": 12.346,
        "consumer_lag": 42,
        "alerts": [
            {
                "name": "KafkaCertificateExpiresSoon",
                "severity": "warning",
                "instance": "kafka1",
                "state": "pending",
            }
        ],
        "source": f"http://127.0.0.1:{port}/prom",  # no user and password
        "error": None,
        "state": "ok",  # a pending alert is not firing
    }
    assert sorted(fake.requests) == sorted([*QUERIES.values(), "/prom/api/v1/alerts"])


def test_broker_down_and_urp_are_critical_alerts_sorted(
    prometheus: tuple[FakePrometheus, str],
) -> None:
    fake, url = prometheus
    fake.values.update(brokers_up="2", under_replicated="7")
    fake.alerts = [
        alert("KafkaUnderReplicatedPartitions", "warning", "kafka2"),
        alert("KafkaBrokerDown", "critical", "kafka3"),
        alert("Pending", "critical", "kafka1", "pending"),
    ]
    body = client_for(url).get("/cluster-health").json()
    assert (body["brokers_up"], body["brokers_total"], body["under_replicated"]) == (2, 3, 7)
    assert body["state"] == "critical"
    assert [(a["name"], a["state"]) for a in body["alerts"]] == [
        ("KafkaBrokerDown", "firing"),
        ("KafkaUnderReplicatedPartitions", "firing"),
        ("Pending", "pending"),
    ]


def test_empty_results_count_as_zero_or_no_data(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.values = dict.fromkeys(HEALTHY)  # Prometheus knows no Kafka target at all
    body = client_for(url).get("/cluster-health").json()
    assert (body["brokers_up"], body["brokers_total"]) == (0, 0)
    assert body["under_replicated"] is None
    assert body["messages_in_per_sec"] is None
    assert body["consumer_lag"] is None
    assert body["error"] is None
    assert body["state"] == "critical"  # no Kafka target is not healthy


def test_firing_warning_and_missing_replica_data_are_warnings(
    prometheus: tuple[FakePrometheus, str],
) -> None:
    fake, url = prometheus
    fake.alerts = [alert("KafkaIsrShrinking", "warning", "kafka1")]
    assert client_for(url).get("/cluster-health").json()["state"] == "warning"
    fake.alerts = []
    fake.values["under_min_isr"] = None
    assert client_for(url).get("/cluster-health").json()["state"] == "warning"
    fake.values["under_min_isr"] = "NaN"
    assert client_for(url).get("/cluster-health").json()["under_min_isr"] is None


def test_a_failing_query_keeps_the_others(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.broken = {"under_min_isr"}
    resp = client_for(url).get("/cluster-health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["under_min_isr"] is None
    assert body["brokers_up"] == 3
    assert body["error"] == "Prometheus answered HTTP 400 to /api/v1/query: parse error at 1"
    assert body["state"] == "unavailable"
    fake.values["brokers_up"] = "1"  # what was read still shows a critical problem
    assert client_for(url).get("/cluster-health").json()["state"] == "critical"


def test_unreachable_prometheus_is_200_with_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    resp = client_for(url).get("/cluster-health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["state"] == "unavailable"
    assert body["error"] == "cannot reach Prometheus (ConnectError)"
    assert [body[k] for k in QUERIES] == [None] * len(QUERIES)
    assert body["alerts"] == []
    assert body["source"] == url


def test_slow_prometheus_times_out(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.delay = 1.0
    started = time.monotonic()
    body = client_for(url, prometheus_timeout_seconds=0.3).get("/cluster-health").json()
    assert time.monotonic() - started < 0.9
    assert body["error"] == "no answer from Prometheus within 0.3s"
    assert body["state"] == "unavailable"


def test_a_wrong_path_is_an_error(prometheus: tuple[FakePrometheus, str]) -> None:
    _, url = prometheus
    body = client_for(url.replace("/prom/", "/elsewhere")).get("/cluster-health").json()
    assert body["error"].startswith("Prometheus answered HTTP 404 to /api/v1/")
    assert body["state"] == "unavailable"


def test_not_configured_asks_nobody() -> None:
    client = TestClient(create_app(ConsumerSettings()))
    body = client.get("/cluster-health").json()
    assert body["state"] == "not_configured"
    assert body["error"] == "monitoring not configured"
    assert body["source"] is None
    assert [body[k] for k in QUERIES] == [None] * len(QUERIES)


async def test_cache_one_refresh_for_many_requests(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.delay = 0.1
    clock = Clock()
    health = ClusterHealth(url, 2.0, 5.0, clock=clock)
    try:
        answers = await asyncio.gather(*(health.get() for _ in range(20)))
        assert health.refreshes == 1
        assert len(fake.requests) == len(QUERIES) + 1
        assert all(a is answers[0] for a in answers)
        clock.now += 4.9
        await health.get()
        assert health.refreshes == 1
        fake.values["brokers_up"] = "2"
        clock.now += 0.2
        assert (await health.get())["brokers_up"] == 2
        assert health.refreshes == 2
        assert len(fake.requests) == 2 * (len(QUERIES) + 1)
    finally:
        await health.aclose()


async def test_cache_keeps_a_failure_too() -> None:
    clock = Clock()
    health = ClusterHealth(f"http://127.0.0.1:{free_port()}", 1.0, 5.0, clock=clock)
    try:
        first = await health.get()
        assert first["state"] == "unavailable"
        assert await health.get() is first
        assert health.refreshes == 1
        clock.now += 6
        await health.get()
        assert health.refreshes == 2
    finally:
        await health.aclose()


def test_health_state_rules() -> None:
    base: dict[str, Any] = {
        "brokers_up": 3,
        "brokers_total": 3,
        "under_replicated": 0,
        "under_min_isr": 0,
        "alerts": [],
        "error": None,
    }
    assert health_state(base) == "ok"
    assert health_state({**base, "under_min_isr": 1}) == "critical"
    assert health_state({**base, "brokers_up": None, "error": "x"}) == "unavailable"
    crit = {"name": "a", "severity": "critical", "instance": "i", "state": "firing"}
    assert health_state({**base, "alerts": [crit]}) == "critical"
    assert health_state({**base, "alerts": [{**crit, "state": "pending"}]}) == "ok"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("  http://10.0.0.9:9090/ ", "http://10.0.0.9:9090"),
        ("https://prom.example/prometheus", "https://prom.example/prometheus"),
    ],
)
def test_prometheus_url_setting(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    monkeypatch.setenv("KRAFTWERK_PROMETHEUS_URL", raw)
    assert ConsumerSettings().prometheus_url == expected


def test_prometheus_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAFTWERK_PROMETHEUS_URL", "10.0.0.9:9090")
    with pytest.raises(ValidationError, match="http"):
        ConsumerSettings()


# --- the page's section --------------------------------------------------------------------

SNAPSHOT = {"topic": "t", "group": "g", "history_size": 1, "messages": [], "partitions": []}
HEALTH_IDS = [
    "cluster-health",
    "health-state",
    "health-message",
    "health-brokers-up",
    "health-brokers-total",
    "health-urp",
    "health-under-min-isr",
    "health-messages-in",
    "health-consumer-lag",
    "health-alerts",
    "health-source",
    "health-updated",
]


def test_page_has_the_health_elements() -> None:
    page = render_page(SNAPSHOT, "/c")
    for element_id in HEALTH_IDS:
        assert page.count(f'id="{element_id}"') == 1, element_id
    assert 'BASE + "/cluster-health"' in page


# A minimal DOM for running the page's script in node: enough to check what renderHealth shows.
DOM_STUB = """
"use strict";
const elements = {};
function makeElement(id) {
  return {
    id, textContent: "", className: "", dataset: {}, children: [],
    classList: { set: new Set(),
      toggle(name, on) { if (on) this.set.add(name); else this.set.delete(name); } },
    appendChild(child) { this.children.push(child); },
    replaceChildren() { this.children = []; },
  };
}
globalThis.document = {
  hidden: false,
  getElementById(id) { return elements[id] || (elements[id] = makeElement(id)); },
  createElement() { return makeElement(null); },
};
globalThis.EventSource = class { addEventListener() {} };
globalThis.setTimeout = () => 0;
globalThis.fetch = () => new Promise(() => {});
"""

DOM_REPORT = """
function report(h) {
  renderHealth(h);
  const out = {};
  for (const [id, el] of Object.entries(elements)) {
    if (!id.startsWith("health-") && id !== "cluster-health") continue;
    out[id] = { text: el.textContent, data: el.dataset, bad: el.classList.set.has("bad"),
      items: el.children.map((c) => ({ text: c.textContent, data: c.dataset, cls: c.className })) };
  }
  return JSON.parse(JSON.stringify(out));  // a copy: the elements change with the next case
}
console.log(JSON.stringify(CASES.map(report)));
"""


def test_page_renders_health_states(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    page = render_page(SNAPSHOT, "")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    healthy = {
        "brokers_up": 3, "brokers_total": 3, "under_replicated": 0, "under_min_isr": 0,
        "messages_in_per_sec": 12.345, "consumer_lag": 42, "alerts": [],
        "source": "http://10.0.0.9:9090", "error": None, "state": "ok",
        "fetched_at": 1700000000.5,
    }  # fmt: skip
    degraded = {
        **healthy, "brokers_up": 2, "under_replicated": 5, "state": "critical",
        "alerts": [{"name": "KafkaBrokerDown", "severity": "critical", "instance": "kafka3",
                    "state": "firing"}],
    }  # fmt: skip
    unavailable: dict[str, Any] = {
        **dict.fromkeys(healthy), "alerts": [], "state": "unavailable",
        "error": "cannot reach Prometheus (ConnectError)", "source": "http://10.0.0.9:9090",
    }  # fmt: skip
    not_configured = {**unavailable, "state": "not_configured", "source": None,
                      "error": "monitoring not configured"}  # fmt: skip
    cases = [healthy, degraded, unavailable, not_configured]
    path = tmp_path / "page.js"
    path.write_text(DOM_STUB + script + f"\nconst CASES = {json.dumps(cases)};\n" + DOM_REPORT)
    run = subprocess.run([node, str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    ok, bad, down, off = json.loads(run.stdout)

    assert ok["cluster-health"]["data"]["state"] == "ok"
    assert (ok["health-state"]["text"], ok["health-state"]["data"]["state"]) == ("healthy", "ok")
    assert ok["health-brokers-up"]["text"] == "3"
    assert ok["health-brokers-total"]["text"] == "3"
    assert ok["health-urp"] == {"text": "0", "data": {"value": "0"}, "bad": False, "items": []}
    assert ok["health-messages-in"]["text"] == "12.3"
    assert ok["health-messages-in"]["data"]["value"] == "12.345"
    assert ok["health-consumer-lag"]["text"] == "42"
    assert ok["health-message"]["text"] == ""
    assert ok["health-alerts"]["data"] == {"count": "0", "firing": "0"}
    assert [i["text"] for i in ok["health-alerts"]["items"]] == ["no alerts"]
    assert ok["health-source"]["text"] == "http://10.0.0.9:9090"
    assert ok["health-updated"]["text"] == "2023-11-14T22:13:20.500Z"

    assert bad["health-state"]["data"]["state"] == "critical"
    assert bad["health-brokers-up"]["bad"]
    assert bad["health-urp"]["bad"]
    assert bad["health-urp"]["text"] == "5"
    assert bad["health-alerts"]["data"] == {"count": "1", "firing": "1"}
    assert bad["health-alerts"]["items"] == [
        {
            "text": "KafkaBrokerDown (critical) on kafka3: firing",
            "data": {
                "alert": "KafkaBrokerDown",
                "severity": "critical",
                "instance": "kafka3",
                "state": "firing",
            },
            "cls": "bad",
        }
    ]

    assert down["health-state"]["text"] == "health unavailable"
    assert down["health-message"]["text"] == (
        "health unavailable: cannot reach Prometheus (ConnectError)"
    )
    assert down["health-brokers-up"]["text"] == "-"
    assert down["health-brokers-up"]["data"]["value"] == ""
    assert down["health-alerts"]["items"] == []

    assert off["health-state"]["data"]["state"] == "not_configured"
    assert off["health-state"]["text"] == "monitoring not configured"
    assert off["health-message"]["text"] == "monitoring not configured"
    assert off["health-source"]["text"] == "-"
