"""Local load test (and optional profile) of the producer and the end-to-end path.

Everything runs on this machine (loopback only, bounded in time): a single-node Kafka 3.9.1
from the test jars (or ``--bootstrap``), the real producer app, a non-durable "seed-style"
producer (``seed_app.py``), ``wrk`` and the references below.  Each scenario reports its
rate, latency and the CPU time the app process used per request (or per message), which is
the number to compare when other work shares the cores.

Scenarios (same run, so that ratios compare like with like):

* ``healthz``    GET /healthz of the producer (the no-op baseline), wrk -c32
* ``send``       POST /send (bench/send.lua's request), wrk -c32
* ``seed_send``  POST /send of ``seed_app.py`` (answers without waiting for the ack), wrk -c32
* ``batch``      POST /send/batch, 100 messages of ~200 B, wrk -c8
* ``flat``       ``flat_producer.py``: aiokafka ``send()`` flat out, 200 B records
* ``perf_test``  Kafka's ``ProducerPerformance`` (kafka-producer-perf-test), acks=all, 200 B
* ``e2e``        (``--e2e``) POST /send at 500 msg/s -> the consumer's SSE ``/events``

Usage (from apps/):

    .venv/bin/python perf/loadtest.py --seconds 10 [--rounds 3] [--e2e]
        [--profile ../docs --label after] [--src /path/to/other/src] [--env KRAFTWERK_X=y]

``--src`` runs the apps from another source tree (e.g. an older commit exported with
``git archive``) with this venv.  ``--profile DIR`` records py-spy flame graphs
(``DIR/profile-send-LABEL.svg``, ``DIR/profile-batch-LABEL.svg``) during the first round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

APPS = Path(__file__).resolve().parents[1]
PERF = APPS / "perf"
sys.path.insert(0, str(APPS))

from tests.conftest import _create_topics  # noqa: E402
from tests.kafka_server import ensure_libs, start_kafka  # noqa: E402
from tests.procs import AppProcess, free_port, start_app  # noqa: E402

API_KEY = "perf-key-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its child processes (uvicorn workers)."""
    total = 0.0
    pids = {pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                pids.add(int(stat.parent.name))
    for p in pids:
        with suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


@dataclass
class Result:
    name: str
    rate: float  # requests/s (or messages/s for flat, perf_test, batch_msgs)
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us: float | None = None  # app CPU per request (per message for batch/flat)
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(
    name: str,
    url: str,
    seconds: int,
    conns: int,
    pid: int,
    script: str | None = None,
    per_request: int = 1,
    profile: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(PERF / script)]
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d",
             str(max(1, seconds - 1)), "-r", "100", "-f", "flamegraph", "--nonblocking",
             "-o", str(profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    before = cpu_seconds(pid)
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    used = cpu_seconds(pid) - before
    if spy is not None:
        spy.wait(timeout=60)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    return Result(
        name,
        rate * per_request,
        _ms(p50.group(1)) if p50 else None,
        _ms(p99.group(1)) if p99 else None,
        used / max(total * per_request, 1) * 1e6,
        int(non2xx.group(1)) if non2xx else 0,
    )


def run_flat(bootstrap: str, topic: str, count: int) -> Result:
    out = subprocess.run(
        [sys.executable, str(PERF / "flat_producer.py"), bootstrap, topic, str(count)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    data = json.loads(out.strip().splitlines()[-1])
    return Result("flat", data["msgs_per_s"], cpu_us=data["cpu_us_per_msg"])


def run_perf_test(bootstrap: str, topic: str, count: int) -> Result:
    java = shutil.which("java") or "java"
    out = subprocess.run(
        [java, "-Xmx512m", "-cp", f"{ensure_libs()}/*",
         "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
         "--num-records", str(count), "--record-size", "200", "--throughput", "-1",
         "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
         "enable.idempotence=true"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    last = [line for line in out.splitlines() if "records sent" in line][-1]
    rate = float(re.search(r"([\d.]+) records/sec", last).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"([\d.]+) ms 99th", last)
    return Result("perf_test", rate, p99_ms=float(p99.group(1)) if p99 else None)


async def _post_loop(
    port: int, queue: asyncio.Queue[str], sent: dict[str, float], errors: list[int]
) -> None:
    """One keep-alive connection: POST /send for every marker taken from ``queue``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            marker = await queue.get()
            body = json.dumps({"e2e": marker}).encode()
            head = (
                f"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sent[marker] = time.perf_counter()
            writer.write(head.encode() + body)
            status = (await reader.readline()).split()[1]
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if status != b"200":
                errors.append(int(status))
    finally:
        writer.close()


async def _e2e(producer: int, consumer: int, seconds: float, rate: int) -> dict[str, float]:
    """POST /send at ``rate``/s (open loop, 32 connections); latency from writing the request
    until the message shows up in an SSE snapshot of the consumer's ``/events``."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    errors: list[int] = []
    run = uuid.uuid4().hex[:8]

    async def watch() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", consumer, limit=2**24)
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while line := await reader.readline():
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            for msg in json.loads(line[6:]).get("messages", []):
                marker = (msg.get("value") or {}).get("e2e")
                if marker in sent:
                    latencies.append(now - sent.pop(marker))

    queue: asyncio.Queue[str] = asyncio.Queue()
    watcher = asyncio.create_task(watch())
    posters = [asyncio.create_task(_post_loop(producer, queue, sent, errors)) for _ in range(32)]
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    start, n = loop.time(), 0
    while (elapsed := loop.time() - start) < seconds:
        while n < elapsed * rate:
            queue.put_nowait(f"{run}-{n}")
            n += 1
        await asyncio.sleep(0.001)
    while not queue.empty():
        await asyncio.sleep(0.01)
    await asyncio.sleep(2.0)
    for task in [watcher, *posters]:
        task.cancel()
    await asyncio.gather(watcher, *posters, return_exceptions=True)
    latencies.sort()
    result: dict[str, float] = {"sent": n, "seen": len(latencies), "errors": len(errors)}
    if latencies:
        result["p50_ms"] = statistics.median(latencies) * 1000
        result["p99_ms"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return result


def run_e2e(env: dict[str, str], logs: Path, src: str | None, seconds: int, rate: int) -> Result:
    """A fresh topic, producer and consumer (no backlog from the other scenarios)."""
    topic = f"e2e-{uuid.uuid4().hex[:6]}"
    asyncio.run(_create_topics(env["KRAFTWERK_BOOTSTRAP_SERVERS"], {topic: 6, f"{topic}.dlq": 1}))
    env = {**env, "KRAFTWERK_TOPIC": topic, "KRAFTWERK_DLQ_TOPIC": f"{topic}.dlq"}
    producer = start("producer", env, logs, src)
    try:
        consumer = start("consumer", env, logs, src)
        try:
            before_p = cpu_seconds(producer.process.pid)
            before_c = cpu_seconds(consumer.process.pid)
            data = asyncio.run(_e2e(producer.port, consumer.port, seconds, rate))
            used_c = cpu_seconds(consumer.process.pid) - before_c
            used_p = cpu_seconds(producer.process.pid) - before_p
        finally:
            consumer.stop()
    finally:
        producer.stop()
    sent = max(data["sent"], 1)
    return Result(
        "e2e",
        sent / seconds,
        data.get("p50_ms"),
        data.get("p99_ms"),
        used_p / sent * 1e6,
        int(data["errors"]),
        {"consumer_cpu_us_per_msg": used_c / sent * 1e6, "seen": data["seen"]},
    )


@contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    os.environ.setdefault("KRAFTWERK_TEST_KAFKA_PORT", "39092")
    os.environ.setdefault("KRAFTWERK_TEST_CONTROLLER_PORT", "39093")
    with tempfile.TemporaryDirectory(prefix="kw-perf-") as tmp:
        server = start_kafka(Path(tmp))
        try:
            yield server.bootstrap
        finally:
            server.stop()


def start(kind: str, env: dict[str, str], logs: Path, src: str | None) -> AppProcess:
    if src:
        env = {**env, "PYTHONPATH": src}
    app = start_app(kind, env, logs)
    try:
        app.wait_http("/readyz", 200)
    except BaseException:
        app.stop()
        raise
    return app


def start_seed(bootstrap: str, topic: str, logs: Path) -> AppProcess:
    port = free_port()
    log_path = logs / f"seed-{port}.log"
    env = {**os.environ, "SEED_BOOTSTRAP": bootstrap, "SEED_TOPIC": topic, "SEED_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, str(PERF / "seed_app.py")],
        env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    app = AppProcess("seed", port, process, log_path)
    app.wait_http("/healthz", 200)
    return app


def batch_body(path: Path, count: int = 100) -> None:
    pad = "x" * 160
    messages = [{"value": {"bench": i, "source": "wrk", "pad": pad}} for i in range(count)]
    path.write_text(json.dumps({"messages": messages}, separators=(",", ":")))


def table(rounds: list[dict[str, Result]]) -> str:
    def med(name: str, get: Callable[[Result], float | None]) -> float | None:
        values = [v for r in rounds if name in r and (v := get(r[name])) is not None]
        return statistics.median(values) if values else None

    lines = [f"{'scenario':<10} {'rate/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'app CPU us':>11}"]
    names = list(rounds[0])
    for name in names:
        cells = [med(name, lambda r: r.rate), med(name, lambda r: r.p50_ms),
                 med(name, lambda r: r.p99_ms), med(name, lambda r: r.cpu_us)]  # fmt: skip
        text = " ".join(
            f"{'-' if c is None else f'{c:,.1f}':>{w}}"
            for c, w in zip(cells, (10, 8, 8, 11), strict=True)
        )
        errors = sum(r[name].errors for r in rounds if name in r)
        extra = {k: med(name, lambda r, k=k: r.extra.get(k)) for k in rounds[0][name].extra}
        more = "".join(f"  {k}={v:,.1f}" for k, v in extra.items() if v is not None)
        lines.append(f"{name:<10} {text}" + (f"  errors={errors}" if errors else "") + more)
    rate = {n: med(n, lambda r: r.rate) or 0.0 for n in names}

    def ratio(a: str, b: str) -> str:
        return f"{rate[a] / rate[b]:.2f}" if rate.get(a) and rate.get(b) else "-"

    lines.append(
        f"ratios: send/healthz {ratio('send', 'healthz')}  send/seed_send "
        f"{ratio('send', 'seed_send')}  batch/flat {ratio('batch', 'flat')}  "
        f"batch/perf_test {ratio('batch', 'perf_test')}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--src", help="PYTHONPATH for the apps (another source tree)")
    parser.add_argument("--env", action="append", default=[], help="KRAFTWERK_X=value")
    parser.add_argument("--profile", type=Path, help="write py-spy flame graphs here")
    parser.add_argument("--label", default="local")
    parser.add_argument("--e2e", action="store_true", help="also POST -> consumer SSE at 500/s")
    parser.add_argument("--only", help="comma-separated scenarios to run")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    os.environ["KRAFTWERK_API_KEY"] = API_KEY
    with kafka(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        topic = f"perf-{uuid.uuid4().hex[:6]}"
        asyncio.run(_create_topics(bootstrap, {topic: 6, f"{topic}.dlq": 1}))
        env = {
            "KRAFTWERK_BOOTSTRAP_SERVERS": bootstrap,
            "KRAFTWERK_TOPIC": topic,
            "KRAFTWERK_DLQ_TOPIC": f"{topic}.dlq",
            "KRAFTWERK_API_KEYS": API_KEY,
        }
        env.update(dict(item.split("=", 1) for item in args.env))
        batch_file = logs / "batch.json"
        batch_body(batch_file)
        producer = start("producer", env, logs, args.src)
        seed = start_seed(bootstrap, topic, logs) if want("seed_send") else None
        rounds: list[dict[str, Result]] = []
        try:
            for n in range(args.rounds):
                prof = args.profile if n == 0 else None
                pid, secs, url = producer.process.pid, args.seconds, producer.url
                r: dict[str, Result] = {}
                if want("healthz"):
                    r["healthz"] = run_wrk("healthz", url + "/healthz", secs, 32, pid)
                if want("send"):
                    out = prof / f"profile-send-{args.label}.svg" if prof else None
                    r["send"] = run_wrk("send", url, secs, 32, pid, "send.lua", profile=out)
                if seed is not None:
                    r["seed_send"] = run_wrk(
                        "seed_send", seed.url, secs, 32, seed.process.pid, "send.lua"
                    )
                if want("batch"):
                    out = prof / f"profile-batch-{args.label}.svg" if prof else None
                    r["batch"] = run_wrk(
                        "batch", url, secs, 8, pid, "batch.lua", per_request=100,
                        profile=out, env={"BATCH_FILE": str(batch_file)},
                    )  # fmt: skip
                if want("flat"):
                    r["flat"] = run_flat(bootstrap, topic, 300_000)
                if want("perf_test"):
                    r["perf_test"] = run_perf_test(bootstrap, topic, 500_000)
                if args.e2e:
                    r["e2e"] = run_e2e(env, logs, args.src, secs * 2, 500)
                rounds.append(r)
                print(f"--- round {n + 1}\n{table([r])}", flush=True)
        finally:
            for app in (producer, seed):
                if app is not None:
                    app.stop()
        if args.rounds > 1:
            print(f"=== median of {args.rounds} rounds\n{table(rounds)}")


if __name__ == "__main__":
    main()
