"""The page's "Cluster health" (``GET /cluster-health``): a few instant queries against
Prometheus's HTTP API, and its alerts.

* ``KRAFTWERK_PROMETHEUS_URL`` empty: ``state`` = ``not_configured``, Prometheus is never asked.
* One refresh runs every query and ``/api/v1/alerts`` concurrently, all of them within
  ``KRAFTWERK_PROMETHEUS_TIMEOUT_SECONDS``.  A query that fails leaves its value ``null`` and
  sets ``error`` (the others are kept); nothing here raises, so the endpoint never answers 5xx.
* The answer (a failed one too) is reused for ``KRAFTWERK_CLUSTER_HEALTH_CACHE_SECONDS`` by
  every browser, and concurrent requests wait for one refresh: N open pages cost Prometheus
  one refresh per period, and an unreachable Prometheus is not hammered either.

``state`` (worst first):

* ``critical``: fewer Kafka targets up than known (``brokers_up < brokers_total``), no Kafka
  target at all, under-replicated or under-min-ISR partitions, or a firing alert with
  ``severity="critical"``;
* ``unavailable``: not everything could be read (``error`` says why) and nothing read shows a
  critical problem;
* ``warning``: a firing alert, or no data for the replica counts (no Kafka metrics);
* ``ok``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

log = logging.getLogger(__name__)

T = TypeVar("T")

# Shared with the Grafana dashboard and the monitoring contract (docs/monitoring-contract.md).
QUERIES: dict[str, str] = {
    "brokers_up": 'count(up{job="kafka"} == 1)',
    "brokers_total": 'count(up{job="kafka"})',
    "under_replicated": "sum(kafka_server_replicamanager_underreplicatedpartitions)",
    "under_min_isr": "sum(kafka_server_replicamanager_underminisrpartitioncount)",
    # The brokers' own MessagesInPerSec (the aggregate without a ``topic`` label: every topic,
    # offset commits included). It exists from a broker's start, so an idle cluster shows 0; a
    # per-topic series only appears after the broker's first write to that topic.
    "messages_in_per_sec": (
        'sum(rate(kafka_server_brokertopicmetrics_messagesin_total{topic=""}[1m]))'
    ),
    # Every consumer instance reports the group's lag of every partition: max, not sum.
    "consumer_lag": "sum(max by (topic, partition) (kraftwerk_consumer_lag))",
}
# count() of nothing is an empty result: for these that means 0, for the others "no data".
COUNT_QUERIES = frozenset({"brokers_up", "brokers_total"})
INTEGER_VALUES = frozenset(
    {"brokers_up", "brokers_total", "under_replicated", "under_min_isr", "consumer_lag"}
)
MAX_ALERTS = 50
MAX_ERROR_TEXT = 200
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

NOT_CONFIGURED = "monitoring not configured"


class PrometheusError(Exception):
    """A query or the alerts could not be read; the message is shown on the page."""


def public_url(url: str) -> str:
    """``url`` without user and password (it is shown on the page)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def empty_health(source: str | None, error: str | None) -> dict[str, Any]:
    health: dict[str, Any] = dict.fromkeys(QUERIES)
    health.update({"alerts": [], "source": source, "error": error, "fetched_at": None})
    return health


def not_configured() -> dict[str, Any]:
    health = empty_health(None, NOT_CONFIGURED)
    health["state"] = "not_configured"
    return health


def health_state(health: dict[str, Any]) -> str:
    """``critical`` / ``unavailable`` / ``warning`` / ``ok`` (see the module docstring)."""
    up, total = health["brokers_up"], health["brokers_total"]
    urp, min_isr = health["under_replicated"], health["under_min_isr"]
    firing = [a for a in health["alerts"] if a["state"] == "firing"]
    if (
        total == 0
        or (up is not None and total is not None and up < total)
        or (urp or 0) > 0
        or (min_isr or 0) > 0
        or any(a["severity"] == "critical" for a in firing)
    ):
        return "critical"
    if health["error"] is not None:
        return "unavailable"
    if firing or urp is None or min_isr is None:
        return "warning"
    return "ok"


def _number(name: str, result: list[Any]) -> int | float | None:
    if not result:
        return 0 if name in COUNT_QUERIES else None
    value = float(result[0]["value"][1])
    if not math.isfinite(value):
        return None
    return round(value) if name in INTEGER_VALUES else round(value, 3)


def _alert(raw: dict[str, Any]) -> dict[str, str]:
    labels = raw.get("labels") or {}
    return {
        "name": str(labels.get("alertname", "")),
        "severity": str(labels.get("severity", "")),
        "instance": str(labels.get("instance", "")),
        "state": str(raw.get("state", "")),
    }


def _alert_order(alert: dict[str, str]) -> tuple[int, int, str, str]:
    return (
        0 if alert["state"] == "firing" else 1,
        SEVERITY_ORDER.get(alert["severity"], len(SEVERITY_ORDER)),
        alert["name"],
        alert["instance"],
    )


class ClusterHealth:
    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        cache_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._source = public_url(self._url) if self._url else None
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._cached: dict[str, Any] | None = None
        self._expires = 0.0
        self._last_error: str | None = None
        self.refreshes = 0  # how often Prometheus was asked (tests, debugging)

    @property
    def configured(self) -> bool:
        return bool(self._url)

    async def get(self) -> dict[str, Any]:
        """The cluster health, at most ``cache_seconds`` old; never raises."""
        if not self._url:
            return not_configured()
        if self._cached is not None and self._clock() < self._expires:
            return self._cached
        async with self._lock:  # one refresh at a time; the others take its answer
            if self._cached is None or self._clock() >= self._expires:
                self._cached = await self._refresh()
                self._expires = self._clock() + self._cache_seconds
            return self._cached

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                transport=self._transport,
                headers={"Accept": "application/json"},
                follow_redirects=False,
            )
        return self._client

    async def _refresh(self) -> dict[str, Any]:
        self.refreshes += 1
        deadline = asyncio.get_running_loop().time() + self._timeout
        names = list(QUERIES)
        answers = await asyncio.gather(
            *(self._bounded(deadline, self._query(name)) for name in names),
            self._bounded(deadline, self._alerts()),
            return_exceptions=True,
        )
        health = empty_health(self._source, None)
        health["fetched_at"] = round(time.time(), 3)
        errors: list[str] = []
        for name, answer in zip([*names, "alerts"], answers, strict=True):
            if isinstance(answer, PrometheusError):
                errors.append(str(answer))
            elif isinstance(answer, BaseException):  # a bug here must not become a 5xx
                log.exception("cluster health: unexpected failure", exc_info=answer)
                errors.append(f"unexpected failure reading {name}: {type(answer).__name__}")
            else:
                health[name] = answer
        if errors:
            health["error"] = "; ".join(dict.fromkeys(errors))  # unique, in order
        if health["error"] != self._last_error:  # log changes, not every refresh
            if health["error"]:
                log.warning("cluster health from Prometheus incomplete: %s", health["error"])
            else:
                log.info("cluster health from Prometheus complete again")
            self._last_error = health["error"]
        health["state"] = health_state(health)
        return health

    async def _bounded(self, deadline: float, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout_at(deadline):
                return await work
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise PrometheusError(f"no answer from Prometheus within {self._timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot reach Prometheus ({type(exc).__name__})") from exc

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = await self._http().get(self._url + path, params=params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else None
            text = f"Prometheus answered HTTP {response.status_code} to {path}"
            if detail:
                text += f": {str(detail)[:MAX_ERROR_TEXT]}"
            raise PrometheusError(text)
        return body.get("data")

    async def _query(self, name: str) -> int | float | None:
        data = await self._get("/api/v1/query", {"query": QUERIES[name]})
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise PrometheusError(f"unexpected answer of Prometheus to the {name} query")
        try:
            return _number(name, data.get("result") or [])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(f"unexpected answer of Prometheus to the {name} query") from exc

    async def _alerts(self) -> list[dict[str, str]]:
        data = await self._get("/api/v1/alerts")
        raw = data.get("alerts") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise PrometheusError("unexpected answer of Prometheus to /api/v1/alerts")
        alerts = sorted((_alert(a) for a in raw if isinstance(a, dict)), key=_alert_order)
        return alerts[:MAX_ALERTS]
