"""A small, bounded load generator for POST /api/send through the edge, with idempotent retries.

Each worker sends JSON messages ``{"chaos": <run>, "id": <id>}`` one after the other on a keep-alive HTTPS
connection, each with ``Idempotency-Key: <id>``, and retries a message with the same key until it is
acknowledged (200) or its own deadline passes:

* 503 (certainly not written), 504 / 502 / a dropped connection (outcome unknown), 429 (the edge's rate limit):
  retried with the same key, which is what the API tells a client to do;
* any other status is a test failure (recorded in ``unexpected``).

Every HTTP status is counted per phase (``phase`` is set by the test while the load runs), so a test can say
"zero 5xx while the rolling restart ran". Only the standard library; the request loop is bounded in count
and time and only talks to the lab's edge address.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RETRYABLE = {429, 502, 503, 504}


@dataclass
class LoadResult:
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (partition, offset)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)  # phase -> status -> count
    unexpected: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    replayed: int = 0

    def count(self, phase: str, status: str) -> None:
        self.statuses.setdefault(phase, Counter())[status] += 1

    def server_errors(self, phase: str) -> int:
        return sum(n for s, n in self.statuses.get(phase, Counter()).items() if s.startswith("5") or s == "conn")


class Load:
    def __init__(self, host: str, api_key: str, tls: ssl.SSLContext, run_id: str, *, workers: int = 8,
                 pace_s: float = 0.04, message_deadline_s: float = 120, max_messages: int = 200_000) -> None:
        self.host, self.api_key, self.tls, self.run_id = host, api_key, tls, run_id
        self.workers, self.pace_s, self.message_deadline_s = workers, pace_s, message_deadline_s
        self.max_messages = max_messages
        self.phase = "warmup"
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sent = 0

    def start(self) -> None:
        for w in range(self.workers):
            t = threading.Thread(target=self._worker, args=(w,), name=f"load-{w}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 180) -> None:
        """Stop taking new messages; messages in progress finish their retries (bounded by their deadline)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"load workers did not finish: {alive}"

    def acked_count(self) -> int:
        with self._lock:
            return len(self.result.acked)

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, 443, context=self.tls, timeout=30)

    def _worker(self, w: int) -> None:
        conn = self._connect()
        seq = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._sent >= self.max_messages:
                        return
                    self._sent += 1
                msg_id = f"{self.run_id}-{w}-{seq}"
                seq += 1
                conn = self._deliver(conn, msg_id)
                time.sleep(self.pace_s)
        finally:
            conn.close()

    def _deliver(self, conn: http.client.HTTPSConnection, msg_id: str) -> http.client.HTTPSConnection:
        body = json.dumps({"chaos": self.run_id, "id": msg_id}).encode()
        headers = {"Content-Type": "application/json", "X-API-Key": self.api_key, "Idempotency-Key": msg_id}
        deadline = time.monotonic() + self.message_deadline_s
        backoff = 0.2
        while True:
            phase = self.phase
            try:
                conn.request("POST", "/api/send", body=body, headers=headers)
                resp = conn.getresponse()
                status, raw = resp.status, resp.read()
                replayed = resp.getheader("Idempotent-Replayed") == "true"
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._connect()
                status, raw, replayed = 0, b"", False
            label = str(status) if status else "conn"
            with self._lock:
                self.result.count(phase, label)
                if status == 200:
                    answer: dict[str, Any] = json.loads(raw)
                    self.result.acked[msg_id] = (int(answer["partition"]), int(answer["offset"]))
                    self.result.replayed += int(replayed)
                    return conn
                if status and status not in RETRYABLE:
                    self.result.unexpected.append(f"{msg_id}: {status} {raw[:300]!r}")
                    return conn
            if time.monotonic() > deadline:
                with self._lock:
                    self.result.given_up.append(msg_id)
                return conn
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


# --- Reading the topic back: was every acknowledged message written exactly once? -------------------------


def read_back(kafka_host: Any, bootstrap: str, admin_config: str, topic: str, run_id: str,
              timeout_ms: int = 15000) -> Counter[str]:
    """How often each message id of this run is in the topic: the console consumer on a Kafka host, as the
    admin principal, from the beginning with a throw-away group (deleted after); it ends when nothing came
    for ``timeout_ms``."""
    group = f"kraftwerk-check-{run_id}"
    res = kafka_host.run(
        f"kafka-console-consumer --bootstrap-server {bootstrap} --consumer.config {admin_config} --topic {topic} "
        f"--from-beginning --timeout-ms {timeout_ms} --group {group} 2>/dev/null")
    kafka_host.run(f"kafka-consumer-groups --bootstrap-server {bootstrap} --command-config {admin_config} "
                   f"--delete --group {group}")
    found: Counter[str] = Counter()
    for line in res.stdout.splitlines():
        if run_id in line:
            try:
                found[json.loads(line)["id"]] += 1
            except (ValueError, KeyError, TypeError):
                continue
    return found


def tally(result: LoadResult, found: Counter[str]) -> dict[str, Any]:
    """The counts a closing note quotes: acknowledged, found, lost, duplicates, given up, statuses per phase."""
    acked = set(result.acked)
    lost = sorted(acked - set(found))
    duplicates = sorted(k for k, n in found.items() if n > 1)
    return {
        "acknowledged": len(acked),
        "found": len(found),
        "found_not_acknowledged": len(set(found) - acked),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "duplicates": len(duplicates),
        "duplicate_examples": duplicates[:5],
        "given_up": len(result.given_up),
        "replayed_answers": result.replayed,
        "statuses": {phase: dict(c) for phase, c in result.statuses.items()},
        "server_errors": {phase: result.server_errors(phase) for phase in result.statuses},
    }


def assert_nothing_lost(result: LoadResult, counts: dict[str, Any]) -> None:
    """Every acknowledged message is in the topic once; no unexpected status; no message given up."""
    assert not result.unexpected, result.unexpected[:5]
    assert counts["acknowledged"] > 0, "nothing was acknowledged"
    assert not counts["lost"], f"{counts['lost']} acknowledged messages are not in the topic: {counts['lost_examples']}"
    assert not counts["duplicates"], f"{counts['duplicates']} messages are in the topic twice: {counts['duplicate_examples']}"
    assert not result.given_up, result.given_up[:5]
