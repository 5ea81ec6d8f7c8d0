"""./kw bench: a plain aiokafka producer flat out, the client library's ceiling for ``POST /api/send/batch``.

Run ON a producer host with the producer's venv python, fed on stdin by bench/kwbench.py over ssh:
    python - DURATION RECORD_BYTES [--concurrency=N] ENV_FILE [ENV_FILE ...]
It reads the producer app's env files (its systemd EnvironmentFile=s: Kafka listener, SASL/SCRAM, CA, topic,
linger, compression), builds the app's own producer (``KafkaSender._build``: acks=all, idempotent, same
compression; a copy of its arguments if that private helper changed), and sends ~RECORD_BYTES JSON records
without keys (like the batch endpoint without keys) to the app's topic as fast as ``send()`` accepts them, for
DURATION seconds. Prints one JSON line: acknowledged records per second (total and per second of the run) and
the enqueue->acknowledgement latency.

With ``--concurrency=N`` it is the ceiling of ``POST /api/send`` instead: N tasks, each sending one record and
awaiting its acknowledgement before the next (a closed loop, like N HTTP clients of a durable endpoint, without
HTTP, TLS, NGINX or the app's own work).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

PAD = "abcdefghijklmnopqrstuvwxyz0123456789" * 40


def record(kind: str, seq: int, size: int) -> bytes:
    """The bench's record: compact JSON of exactly ``size`` bytes (same shape as bench/wrk.lua's)."""
    head = f'{{"bench":"{kind}","seq":{seq},"pad":"'
    n = max(size - len(head) - 2, 1)
    start = seq % 36
    return (head + PAD[start : start + n] + '"}').encode()


def load_env_file(path: str) -> None:
    """KEY="value" lines as written by the pyapp role (\\ \" \\n escaped) into os.environ."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()  # noqa: PLW2901
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace("\\\\", "\0").replace('\\"', '"').replace("\\n", "\n").replace("\0", "\\")
            os.environ[key.strip()] = value


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[idx]


async def run(duration: float, size: int, concurrency: int) -> dict[str, Any]:
    from kraftwerk_apps.producer.settings import ProducerSettings  # noqa: PLC0415

    settings = ProducerSettings(client_id="kraftwerk-bench-flat")
    try:
        from kraftwerk_apps.producer.gateway import KafkaSender  # noqa: PLC0415

        producer = KafkaSender(settings)._build()  # noqa: SLF001
        builder = "KafkaSender._build"
    except (ImportError, AttributeError, TypeError):
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415

        producer = AIOKafkaProducer(
            **settings.kafka_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            compression_type=settings.compression_type,
            max_request_size=max(settings.max_body_bytes * 2, 1_048_576),
        )
        builder = "copy of KafkaSender._build's arguments"
    topic = settings.topic
    await producer.start()
    acked: dict[int, int] = defaultdict(int)
    lat_by_sec: dict[int, list[float]] = defaultdict(list)
    failures: list[str] = []
    try:
        # Warm-up: metadata and the idempotent producer id, outside the measured window.
        await (await producer.send(topic, value=record("flat", 0, size)))
        t0 = time.monotonic()
        end = t0 + duration

        def done(start: float, fut: asyncio.Future[Any]) -> None:
            now = time.monotonic()
            if fut.cancelled() or fut.exception() is not None:
                if len(failures) < 10:
                    failures.append(repr(fut.exception()) if not fut.cancelled() else "cancelled")
                acked[-1] += 1
                return
            sec = int(now - t0)
            acked[sec] += 1
            lat_by_sec[sec].append(now - start)

        sent = 0
        if concurrency:

            async def worker() -> None:
                nonlocal sent
                while (now := time.monotonic()) < end:
                    sent += 1
                    fut = await producer.send(topic, value=record("closed", sent, size))
                    fut.add_done_callback(lambda f, s=now: done(s, f))
                    with contextlib.suppress(Exception):  # counted by done()
                        await fut

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        while not concurrency:
            now = time.monotonic()
            if now >= end:
                break
            fut = await producer.send(topic, value=record("flat", sent + 1, size))
            fut.add_done_callback(lambda f, s=now: done(s, f))
            sent += 1
            if sent % 200 == 0:
                await asyncio.sleep(0)  # let the sender task run even when send() never waits
        send_end = time.monotonic()
        await producer.flush()
        flushed = time.monotonic()
    finally:
        await producer.stop()
    window = int(duration)
    in_window = sum(acked[s] for s in range(window))
    lat_all = [v for s in range(window) for v in lat_by_sec[s]]
    return {
        "builder": builder,
        "concurrency": concurrency or None,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "compression_type": settings.compression_type,
        "security_protocol": settings.security_protocol,
        "sasl_mechanism": settings.sasl_mechanism,
        "topic": topic,
        "record_bytes": len(record("flat", 12345, size)),
        "duration_s": window,
        "sent": sent,
        "send_seconds": send_end - t0,
        "flush_seconds": flushed - send_end,
        "acked_in_window": in_window,
        "msg_per_s": in_window / window if window else None,
        "failed": acked[-1],
        "failures": failures,
        "per_second": [acked[s] for s in range(window)],
        "latency_ms": {
            "p50": ms(percentile(lat_all, 50)),
            "p99": ms(percentile(lat_all, 99)),
            "max": ms(max(lat_all, default=None)),
        },
        "latency_p50_ms_per_second": [ms(percentile(lat_by_sec[s], 50)) for s in range(window)],
        "latency_p99_ms_per_second": [ms(percentile(lat_by_sec[s], 99)) for s in range(window)],
    }


def main() -> None:
    duration, size = float(sys.argv[1]), int(sys.argv[2])
    rest = sys.argv[3:]
    concurrency = 0
    if rest and rest[0].startswith("--concurrency="):
        concurrency = int(rest.pop(0).split("=", 1)[1])
    for path in rest:
        load_env_file(path)
    result = asyncio.run(run(duration, size, concurrency))
    sys.stdout.write("BENCHJSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
