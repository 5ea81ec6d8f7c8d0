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
