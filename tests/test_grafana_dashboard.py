"""monitoring/grafana/kraftwerk-overview.json: valid, every panel queries Prometheus, the PromQL parses.

Fast and offline. Whether each query returns data from a real deployment is checked by the lab/Molecule
monitoring test (which uses the same tests/monitoring/dashboard_queries.py). The PromQL is parsed by promtool
(as recording rules, `promtool check rules`) from lab/fetch-promtool ($KRAFTWERK_PROMTOOL, the cached binary, or
Debian's package unpacked); without one that test is skipped, except under KRAFTWERK_PROMTOOL_REQUIRED=1 (./kw
unit) or CI=true, where it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "monitoring"))
from dashboard_queries import (  # noqa: E402
    DASHBOARD,
    iter_panels,
    load,
    panel_queries,
    substitute,
)
from promtool_support import require_promtool  # noqa: E402

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24
# What issue 10 asks the dashboard to show: each must appear in some panel's query.
REQUIRED = [
    'up{job="kafka"}',
    "kafka_server_replicamanager_underreplicatedpartitions",
    "kafka_server_replicamanager_underminisrpartitioncount",
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_raft_current_leader",
    "kafka_raft_log_end_offset",
    "kafka_server_replicamanager_isrshrinks_total",
    "kafka_server_replicamanager_isrexpands_total",
    "kafka_network_requestmetrics_requests_total",
    "kafka_network_requestmetrics_totaltimems",
    "kafka_server_brokertopicmetrics_bytesin_total",
    "kafka_server_brokertopicmetrics_bytesout_total",
    "kraftwerk_http_requests_total",
    "kraftwerk_http_request_duration_seconds_bucket",
    "kraftwerk_producer_errors_total",
    "kraftwerk_consumer_messages_processed_total",
    "kraftwerk_consumer_message_retries_total",
    "kraftwerk_consumer_dlq_messages_total",
    "kraftwerk_consumer_lag",
    "kraftwerk_edge_responses_total",
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_avail_bytes",
]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load(DASHBOARD)


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


def test_valid_json_with_a_title_and_uid(dashboard: dict[str, Any]) -> None:
    json.loads(DASHBOARD.read_text(encoding="utf-8"))  # strict: no trailing commas, no comments
    assert dashboard["title"]
    assert dashboard["uid"] == "kraftwerk-overview"
    assert isinstance(dashboard["schemaVersion"], int)
    assert _panels(dashboard)


def test_the_datasource_is_a_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    # No datasource of a particular Grafana installation anywhere: every one is the variable (or Grafana's
    # built-in annotations).
    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    others = [d for d in _datasources(dashboard) if d not in (DATASOURCE, builtin)]
    assert not others


def _datasources(node: Any) -> list[Any]:
    """Every "datasource" value anywhere in the JSON."""
    if isinstance(node, dict):
        own = [node["datasource"]] if "datasource" in node else []
        return own + [d for v in node.values() for d in _datasources(v)]
    if isinstance(node, list):
        return [d for v in node for d in _datasources(v)]
    return []


def test_every_panel_has_the_datasource_and_a_query(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        assert panel.get("datasource") == DATASOURCE, where
        exprs = [t.get("expr") for t in panel.get("targets", [])]
        assert exprs, f"{where}: no targets"
        assert all(isinstance(e, str) and e.strip() for e in exprs), f"{where}: a target without expr"
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{where}: refIds {ref_ids}"


def test_panel_ids_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_panels_fit_the_grid_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], int] = {}
    for panel in iter_panels(dashboard):
        g = panel["gridPos"]
        assert g["x"] >= 0
        assert g["w"] > 0
        assert g["h"] > 0
        assert g["x"] + g["w"] <= GRID_WIDTH, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps panel {taken[(x, y)]}"
                taken[(x, y)] = panel["id"]


def test_queries_have_no_variables_left(dashboard: dict[str, Any]) -> None:
    queries = panel_queries(dashboard)
    assert len(queries) >= len(_panels(dashboard))
    for query in queries:
        assert "$" not in query.expr, query


def test_required_metrics_are_shown(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(q.expr for q in panel_queries(dashboard))
    missing = [name for name in REQUIRED if name not in exprs]
    assert not missing


def test_substitute() -> None:
    assert substitute("rate(x[$__rate_interval])") == "rate(x[1m])"
    assert substitute("rate(x[${__interval}]) + y[${__range:raw}]") == "rate(x[1m]) + y[1h]"
    with pytest.raises(ValueError, match=r"\$topic"):
        substitute('x{topic="$topic"}')


def test_promql_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_promtool()
    rules = [
        {"record": f"kraftwerk:dashboard_panel_{q.panel_id}_{q.ref_id.lower()}", "expr": q.expr}
        for q in panel_queries(dashboard)
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
