"""Monitoring in the lab (issue 10): every scrape target is up, every Grafana panel's query returns data, the
exporters answer only the monitoring host, and a stopped broker makes its alerts fire, then clear.

Prometheus runs on the `monitoring` host (edge1 in Molecule); the controller is one of its allowed clients
(kraftwerk_firewall_monitoring_clients in inventory/lab/group_vars). Every wait is for a condition, with a
deadline. The broker-stop test leaves the cluster as it found it: the broker back, no partition under-replicated.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import CA_FILE, ROOT, address, connects_from, connects_here, eventually, host, hosts_of
from loadgen import Load

KAFKA = hosts_of("kafka")
APP = hosts_of("producer")[0]
EDGE = hosts_of("nginx")[0]
MONITOR = hosts_of("monitoring")[0]
PROMETHEUS = f"http://{address(MONITOR)}:9090"
ALERTMANAGER = f"http://{address(MONITOR)}:9093"
# Where the alert timeline and the health-section screenshot go (outside the work tree, so git stays clean).
EVIDENCE = Path(os.environ.get("KRAFTWERK_MONITORING_EVIDENCE", Path(tempfile.gettempdir()) / "kraftwerk-monitoring"))

# job -> (port on each target host, hosts); the scrape configuration must produce exactly these targets.
EXPORTER_PORTS = {"kafka": 7071, "node": 9100, "nginx": 9113}


def api(path: str, **params: str) -> Any:
    url = f"{PROMETHEUS}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def query(expr: str) -> list[dict[str, Any]]:
    return list(api("/api/v1/query", query=expr)["result"])


def value(expr: str) -> float | None:
    result = query(expr)
    return float(result[0]["value"][1]) if result else None


def targets() -> list[dict[str, Any]]:
    return list(api("/api/v1/targets", state="active")["activeTargets"])


def alerts(name: str, **labels: str) -> list[dict[str, Any]]:
    return [a for a in api("/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in labels.items())]


def firing(name: str, **labels: str) -> bool:
    return any(a["state"] == "firing" for a in alerts(name, **labels))


# --- targets -------------------------------------------------------------------------------------------------------

def test_every_scrape_target_is_up() -> None:
    expected = {("kafka", h) for h in KAFKA} | {("node", h) for h in hosts_of("all")} | {("nginx", EDGE)}
    expected |= {("producer", APP), ("consumer", hosts_of("consumer")[0]), ("prometheus", MONITOR),
                 ("alertmanager", MONITOR)}

    def all_up() -> list[dict[str, Any]] | None:
        got = targets()
        have = {(t["labels"]["job"], t["labels"].get("host", t["labels"]["instance"])) for t in got}
        missing = expected - have
        down = [(t["labels"]["job"], t["labels"]["instance"], t["lastError"]) for t in got if t["health"] != "up"]
        assert not missing and not down, f"missing {sorted(missing)}, down {down}"
        return got

    got = eventually(all_up, 180, "every scrape target up")
    jobs = {t["labels"]["job"] for t in got}
    assert {"kafka", "node", "nginx", "producer", "consumer", "prometheus", "alertmanager", "tls"} <= jobs, jobs


def test_kafka_metrics_operators_watch_are_there() -> None:
    names = ["kafka_server_replicamanager_underreplicatedpartitions",
             "kafka_server_replicamanager_underminisrpartitioncount",
             "kafka_controller_kafkacontroller_activecontrollercount",
             "kafka_controller_kafkacontroller_offlinepartitionscount",
             "kafka_raft_current_leader", "kafka_network_requestmetrics_requests_total",
             "kafka_server_brokertopicmetrics_bytesin_total"]
    for name in names:
        series = eventually(lambda n=name: query(n), 120, f"{name} in Prometheus")  # type: ignore[misc]
        assert {s["metric"]["instance"] for s in series} <= set(KAFKA), series
    # Exactly one active controller in the quorum, every partition in sync.
    assert eventually(lambda: value('sum(kafka_controller_kafkacontroller_activecontrollercount)') == 1, 120,
                      "one active controller")
    assert value("sum(kafka_server_replicamanager_underreplicatedpartitions)") == 0


def test_tls_probes_see_the_certificates_expiry() -> None:
    probes = eventually(lambda: query('probe_ssl_earliest_cert_expiry{job="tls"}'), 120, "TLS probes")
    assert len(probes) >= len(KAFKA) + 1, probes  # every Kafka client listener and the edge
    for p in probes:
        assert float(p["value"][1]) > time.time() + 14 * 86400, p  # the lab's certificates are fresh


# --- the firewall -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("job", "port"), sorted(EXPORTER_PORTS.items()))
def test_exporters_answer_only_the_monitoring_host(job: str, port: int) -> None:
    target = {"kafka": KAFKA[0], "node": KAFKA[0], "nginx": EDGE}[job]
    ip = address(target)
    assert connects_from(MONITOR, ip, port), f"control: {MONITOR} must reach {job} on {target}:{port}"
    outsiders = [h for h in (APP, KAFKA[1], EDGE) if h not in (MONITOR, target)]
    for outsider in outsiders:
        assert not connects_from(outsider, ip, port), f"{outsider} reaches {job} on {target}:{port}"
    assert not connects_here(ip, port), f"the controller reaches {job} on {target}:{port}"


def test_the_apps_metrics_answer_the_monitoring_host_and_not_the_world() -> None:
    ip = address(APP)
    assert connects_from(MONITOR, ip, 8100) and connects_from(MONITOR, ip, 8200)
    assert not connects_here(ip, 8100) and not connects_from(KAFKA[0], ip, 8200)


def test_jmx_is_closed_to_the_network() -> None:
    """The agent serves HTTP; JMX itself (RMI) has no port open: the JVM listens on Kafka's ports and 7071 only."""
    listening = host(KAFKA[0]).check_output("ss -Hltnp | grep java || true")
    ports = sorted({line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines() if line.strip()})
    assert "7071" in ports, listening
    assert set(ports) <= {"7071", "9092", "9093", "9094", "9095", "9096"}, listening


# --- Grafana ------------------------------------------------------------------------------------------------------

def test_every_grafana_panel_query_returns_data(tls: ssl.SSLContext, api_key: str) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "monitoring"))
    from dashboard_queries import load, panel_queries  # noqa: PLC0415

    dashboards = sorted((ROOT / "monitoring" / "grafana").glob("*.json"))
    assert dashboards, "no dashboard in monitoring/grafana"
    empty: list[str] = []
    checked = 0
    # The per-topic panels show traffic: a broker exports a topic's series only after its first write to that
    # topic since it started (and the earlier tests restarted every broker). So clients send while we look.
    traffic = Load(address(EDGE), api_key, tls, f"grafana-{uuid.uuid4().hex[:8]}", workers=2, pace_s=0.1)
    traffic.start()
    try:
        eventually(lambda: traffic.acked_count() >= 50, 120, "50 acknowledged messages through the edge")
        for path in dashboards:
            for q in panel_queries(load(path)):
                checked += 1
                try:
                    eventually(lambda e=q.expr: query(e), 90, f"data for {q.title!r}")
                except AssertionError:
                    empty.append(f"{path.name}: {q.title}: {q.expr}")
    finally:
        traffic.stop()
    assert checked > 10, checked
    assert not empty, "panels without data:\n" + "\n".join(empty)


# --- the page -----------------------------------------------------------------------------------------------------

def test_the_page_shows_the_cluster_health() -> None:
    """The consumer page, through NGINX in a real browser: 3 of 3 brokers, nothing under-replicated."""
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    import consumer_page  # noqa: PLC0415

    consumer_page.require_browser()
    n = len(KAFKA)
    shown = consumer_page.health(f"https://{address(EDGE)}", str(CA_FILE),
                                 until=lambda h: h["brokers"] == f"{n} / {n}" and h["urp"] == "0", timeout=90)
    assert shown["under_min_isr"] == "0" and shown["message"] == "", shown
    # A number even when no client writes (the brokers' own MessagesInPerSec), never "-" (no data).
    assert re.fullmatch(r"\d+(\.\d+)?", shown["messages_in"]), shown


# --- a stopped broker ---------------------------------------------------------------------------------------------

def test_a_stopped_broker_fires_its_alerts_and_they_clear_when_it_is_back() -> None:
    victim = KAFKA[-1]
    EVIDENCE.mkdir(parents=True, exist_ok=True)
    timeline: list[tuple[float, str]] = []
    started = time.monotonic()

    def mark(what: str) -> None:
        timeline.append((round(time.monotonic() - started, 1), what))

    assert not firing("TargetDown", instance=victim) and not firing("KafkaUnderReplicatedPartitions")
    host(victim).run_expect([0], "systemctl stop kafka")
    mark(f"systemctl stop kafka on {victim}")
    try:
        eventually(lambda: firing("TargetDown", job="kafka", instance=victim), 240, "TargetDown firing", every=2)
        mark("TargetDown firing")
        eventually(lambda: firing("KafkaUnderReplicatedPartitions"), 240, "URP alert firing", every=2)
        mark("KafkaUnderReplicatedPartitions firing")
        eventually(lambda: any(a["labels"].get("alertname") == "TargetDown"
                               for a in _alertmanager_alerts()), 120, "Alertmanager has the alert", every=2)
        mark("Alertmanager received TargetDown")
        _health_section_shows_the_stop(victim)
        mark("page health section shows 2/3 brokers (screenshot)")
    finally:
        host(victim).run_expect([0], "systemctl start kafka")
        mark(f"systemctl start kafka on {victim}")
    eventually(lambda: not alerts("TargetDown", instance=victim), 240, "TargetDown cleared", every=2)
    mark("TargetDown cleared")
    eventually(lambda: not alerts("KafkaUnderReplicatedPartitions")
               and value("sum(kafka_server_replicamanager_underreplicatedpartitions)") == 0,
               300, "URP alert cleared and every partition in sync", every=2)
    mark("KafkaUnderReplicatedPartitions cleared, 0 URP")
    (EVIDENCE / "alert-timeline.txt").write_text("".join(f"{t:7.1f} s  {w}\n" for t, w in timeline))
    print("alert timeline:\n" + (EVIDENCE / "alert-timeline.txt").read_text())


def _alertmanager_alerts() -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{ALERTMANAGER}/api/v2/alerts", timeout=10) as resp:
        return list(json.load(resp))


def _health_section_shows_the_stop(victim: str) -> None:
    """The consumer page (through NGINX, in a real browser) shows 2 of 3 brokers up and the firing alert."""
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    import consumer_page  # noqa: PLC0415

    if consumer_page.missing_browser() and os.environ.get("KRAFTWERK_BROWSER_REQUIRED") != "1":
        return  # the alerts are still checked; the page is, by test_the_page_shows_the_cluster_health, when it can
    consumer_page.require_browser()
    health = consumer_page.health(f"https://{address(EDGE)}", str(CA_FILE),
                                  until=lambda h: h["brokers"] == f"{len(KAFKA) - 1} / {len(KAFKA)}"
                                  and "TargetDown" in h["alerts"],
                                  screenshot=str(EVIDENCE / "health-broker-stopped.png"), timeout=120)
    assert victim in health["alerts"], health
