#!/usr/bin/env python3
"""The PromQL of every panel of a Grafana dashboard JSON, ready for Prometheus's HTTP API.

Grafana's own variables are replaced by fixed values ($__rate_interval, $__interval -> 1m, $__range -> 1h,
also in the ${...} and ${...:format} spellings); any other variable left in an expression is an error, so a
query that only works inside Grafana cannot slip through. Row panels (also collapsed ones with nested panels)
are walked into. Only the Python standard library: the Molecule verifier and tests/test_grafana_dashboard.py
both use it.

    python3 tests/monitoring/dashboard_queries.py [dashboard.json]   # prints the queries as JSON lines

    from dashboard_queries import DASHBOARD, load, panel_queries
    for q in panel_queries(load(DASHBOARD)):
        ...  # q.panel_id, q.title, q.ref_id, q.expr: GET /api/v1/query?query=<q.expr>
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "kraftwerk-overview.json"

GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
# $name, ${name} and ${name:format}; Grafana's [[name]] is deprecated and not used here.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    title: str
    ref_id: str
    expr: str  # with Grafana's variables replaced
    raw_expr: str  # as in the dashboard


def load(path: str | Path = DASHBOARD) -> dict[str, Any]:
    with Path(path).open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", []) if panel.get("type") == "row" else []


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced; ValueError for any other variable."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(replace, expr)


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """One entry per target with an expression, in panel order (hidden targets are skipped)."""
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            raw = target.get("expr")
            if not raw or target.get("hide"):
                continue
            queries.append(
                PanelQuery(panel["id"], panel.get("title", ""), target.get("refId", ""), substitute(raw), raw)
            )
    return queries


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else DASHBOARD
    for query in panel_queries(load(path)):
        print(json.dumps(asdict(query)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
