#!/usr/bin/env python3
"""./kw bench: every HTTP path of the lab next to its ceiling, measured in ONE run (docs/benchmarks.md).

    ./kw bench [INVENTORY_DIR] [--duration 15] [--e2e-duration 20] [--e2e-rates 100,500,1000] [--skip-site]
    ./kw bench [INVENTORY_DIR] --remove        remove the seed-style producer and the bench's edge/firewall config

INVENTORY_DIR defaults to $KRAFTWERK_BENCH_INVENTORY or inventory/lab. Same record (~200 B compact JSON, no
key), acks=all, the producer app's own compression and linger everywhere. Phases, in this order:
  deploy    bench/seed.yml -e @bench/lab-vars.yml (seed-style producer, /bench/seed/ on the edge, the controller
            exempt from the rate limits)
  site      the timed idempotent `site.yml` re-run with the same vars (changed must be 0; reported, not fatal);
            if it changed anything, bench/seed.yml again (the seed-style producer follows a new release of the
            apps), then a smoke test of every endpoint and a check that both producers run the same venv
  healthz   wrk GET  /api/healthz          (NGINX + producer app, no Kafka)         32 connections
  seed      wrk POST /bench/seed/send      (same NGINX, same producer client, no ack awaited)
  send      wrk POST /api/send             (answers after acks=all)
  e2e       POST /api/send -> the consumer's SSE stream (GET /events), open loop at each rate
  batch     wrk POST /api/send/batch, 100 records a request
  flat      a plain aiokafka producer flat out on the producer host (bench/aiokafka_flat.py), the app's settings
  perf      kafka-producer-perf-test on a Kafka host, to a temporary topic shaped like the app's (deleted after)
Between phases that write to the topic it waits (bounded) until the consumer group has no lag, so that one
phase's backlog does not eat the next one's CPU. Results: bench/results/<UTC timestamp>/ (results.json,
results.md, throughput.png, latency.png, the logs).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PAD = "abcdefghijklmnopqrstuvwxyz0123456789" * 40
PERF_TOPIC = "kraftwerk-bench-perf"
PERF_PAYLOADS = "/tmp/kraftwerk-bench-payloads.txt"  # noqa: S108 - on the Kafka host, removed after
CONNECTIONS = 32


class BenchError(Exception):
    """A phase could not be measured; the message says why."""


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(kind: str, seq: int, size: int, extra: str = "") -> str:
    """The bench's record: compact JSON of exactly ``size`` bytes (same shape as bench/wrk.lua's)."""
    head = f'{{"bench":"{kind}","seq":{seq},{extra}"pad":"'
    n = max(size - len(head) - 2, 1)
    start = seq % 36
    return head + PAD[start : start + n] + '"}'


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def rnd(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def pct_ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile (100: the maximum) of durations in seconds, in ms."""
    v = percentile(seconds, q)
    return None if v is None else round(v * 1000, 1)


class Log:
    def __init__(self) -> None:
        self.path: Path | None = None

    def __call__(self, msg: str) -> None:
        line = f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")


log = Log()


def run(
    cmd: list[str],
    timeout: float,
    *,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a hard timeout (its whole process group is killed then)."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.communicate()
        raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)[:200]}") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.communicate()
        raise
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-15:]
        raise BenchError(f"{shlex.join(cmd)[:200]} exited {proc.returncode}:\n  " + "\n  ".join(tail))
    return res


def bench_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("BENCHJSON "):
            return json.loads(re.sub(r"\b(-?nan|-?inf)\b", "null", line[len("BENCHJSON ") :]))
    raise BenchError("no BENCHJSON line in the output:\n" + text[-2000:])


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine: the lab's hosts share its kernel and cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# Who used the CPU: the lab's hosts are nspawn machines on this kernel, so their processes are in /proc here.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kafka", ("kafka.Kafka",)),
    ("kafka-cli", ("org.apache.kafka.", "kafka.admin.", "kafka.tools.")),
    # wrk, and the aiokafka producer that flat_phase pipes to the producer host's python (the producer's venv)
    ("loadgen", ("wrk ", "/python - ")),
    ("seed", ("seed_app.py",)),
    ("producer", ("kraftwerk-producer",)),
    ("consumer", ("kraftwerk-consumer",)),
    ("nginx", ("nginx:",)),
)


def process_ticks() -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, start time) -> (component, CPU jiffies so far) of every process on this kernel that belongs to a
    component. The process that runs this bench (the e2e client, and wrk's time once waited for) is loadgen."""
    procs: dict[tuple[int, int], tuple[str, int]] = {}
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        if int(d.name) == me:
            name: str | None = "loadgen"
            ticks += int(fields[13]) + int(fields[14])  # + waited-for children
        else:
            name = next((n for n, needles in COMPONENTS if any(x in cmd for x in needles)), None)
        if name:
            procs[(int(d.name), int(fields[19]))] = (name, ticks)
    return procs


class CpuMeter:
    """The machine's busy share during a phase, split by component. /proc is sampled every second, so that
    a process that ends before the phase does (perf-test, the aiokafka producer) still counts, less its last
    second; what no component accounts for (sshd, systemd, anything else on the machine) is "other"."""

    def __init__(self) -> None:
        self.busy0, self.total0 = cpu_times()
        self.first = process_ticks()
        self.last = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.last.update(process_ticks())

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        busy1, total1 = cpu_times()
        self.last.update(process_ticks())
        total = max(total1 - self.total0, 1)
        used: dict[str, int] = defaultdict(int)
        for key, (name, ticks) in self.last.items():
            used[name] += ticks - self.first.get(key, (name, 0))[1]
        share = {k: round(100 * v / total, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0}
        busy = round(100 * (busy1 - self.busy0) / total, 1)
        share["other"] = round(max(busy - sum(share.values()), 0.0), 1)
        return {"cpu_busy_pct": busy, "cpu_pct_by_component": share}


@dataclass
class Lab:
    inv: Path
    hosts_file: Path
    ips: dict[str, str]
    groups: dict[str, list[str]]
    key: str
    edge: str
    app: str
    kafka: str
    api_key: str
    ca: Path
    controller: str
    producer_base_port: int

    @property
    def base(self) -> str:
        return f"https://{self.edge}"


def load_lab(inv: Path) -> Lab:
    hosts_file = inv / "hosts.yml"
    if not hosts_file.exists():
        raise BenchError(f"{hosts_file} does not exist: create and deploy the lab first (./kw lab)")
    inventory_cmd = [str(ROOT / ".venv/bin/ansible-inventory"), "-i", str(hosts_file), "--list"]
    inv_json = json.loads(run(inventory_cmd, 120, env=ansible_env(inv)).stdout)
    hv = inv_json["_meta"]["hostvars"]
    groups = {g: v.get("hosts", []) for g, v in inv_json.items() if isinstance(v, dict)}
    for g in ("kafka", "producer", "consumer", "nginx"):
        if not groups.get(g):
            raise BenchError(f"the inventory has no host in group {g!r}")
    ips = {h: v.get("ansible_host", h) for h, v in hv.items()}
    key = hv[groups["nginx"][0]].get("ansible_ssh_private_key_file", "")
    app = groups["producer"][0]
    vault = yaml.safe_load(
        run([str(ROOT / ".venv/bin/python"), str(ROOT / "lab/kraftwerk-vault"), str(inv), "--show"], 120).stdout
    )
    keys = vault.get("vault_kraftwerk_api_keys") or []
    if not keys:
        raise BenchError(f"no vault_kraftwerk_api_keys in {inv}'s vault")
    edge = ips[groups["nginx"][0]]
    route = json.loads(run(["ip", "-j", "route", "get", edge], 10).stdout)
    controller = route[0].get("prefsrc", "")
    ca = inv / "pki" / "ca.crt"
    if not ca.exists():
        raise BenchError(f"{ca} does not exist (the edge's CA): deploy with site.yml first")
    return Lab(
        inv=inv,
        hosts_file=hosts_file,
        ips=ips,
        groups=groups,
        key=key,
        edge=edge,
        app=ips[app],
        kafka=ips[groups["kafka"][0]],
        api_key=str(keys[0]),
        ca=ca,
        controller=controller,
        producer_base_port=int(hv[app].get("kraftwerk_producer_base_port", 8100)),
    )


def ssh(lab: Lab, ip: str, command: str, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    args = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
    ]
    if lab.key:
        args += ["-i", lab.key]
    return run([*args, f"root@{ip}", command], timeout, **kw)


def ansible_env(inv: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv/bin'}:{env.get('PATH', '')}"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    pass_file = inv / ".vault-pass"
    if pass_file.exists():
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(pass_file)
    return env


def bench_vars(lab: Lab) -> list[str]:
    args = ["-e", f"@{BENCH / 'lab-vars.yml'}"]
    expected = re.sub(r"\.[0-9]+$", ".1", lab.edge)
    if lab.controller and lab.controller != expected:
        log(f"the controller reaches the edge from {lab.controller}, not {expected}: exempting that address")
        args += ["-e", f"kraftwerk_bench_controller={lab.controller}"]
    return args


def playbook(
    lab: Lab, name: str, playbook_path: Path, extra: list[str], out_dir: Path, timeout: float
) -> dict[str, Any]:
    cmd = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(lab.hosts_file), str(playbook_path), *extra]
    log(f"{name}: {shlex.join(cmd)}")
    t0 = time.monotonic()
    res = run(cmd, timeout, env=ansible_env(lab.inv), check=False)
    seconds = time.monotonic() - t0
    (out_dir / f"{name}.log").write_text(res.stdout + res.stderr)
    recap = {
        m[0]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[1])}
        for m in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", res.stdout, re.M)
    }
    changed = sum(r.get("changed", 0) for r in recap.values())
    failed = sum(r.get("failed", 0) + r.get("unreachable", 0) for r in recap.values())
    changed_tasks: dict[str, set[str]] = defaultdict(set)
    task = ""
    for line in res.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]", 1)[0]
        elif line.startswith("changed: ["):
            changed_tasks[task].add(line[10:].split("]", 1)[0].split(" ->", 1)[0])
    return {
        "command": shlex.join(cmd),
        "seconds": round(seconds, 1),
        "rc": res.returncode,
        "changed": changed,
        "failed": failed,
        "recap": recap,
        "changed_tasks": {t: sorted(h) for t, h in changed_tasks.items()},
        "log": f"{name}.log",
    }


# --- HTTP ---------------------------------------------------------------------------------------------------


def ssl_context(lab: Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.ca))


async def http_json(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def smoke(lab: Lab) -> dict[str, Any]:
    """Every endpoint answers as the bench needs it (else a clear error before any measurement)."""
    hdrs = {"X-API-Key": lab.api_key, "Content-Type": "application/json"}
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(lab))) as s:
        checks = [
            ("healthz", "GET", "/api/healthz", None),
            ("send", "POST", "/api/send", record("smoke", 1, 200)),
            (
                "batch",
                "POST",
                "/api/send/batch",
                json.dumps({"messages": [{"value": json.loads(record("smoke", 2, 200))}]}),
            ),
            ("seed", "POST", "/bench/seed/send", record("smoke", 3, 200)),
            ("seed_config", "GET", "/bench/seed/config", None),
            ("messages", "GET", "/messages", None),
        ]
        for name, method, path, body in checks:
            try:
                status, data = await http_json(s, method, lab.base + path, data=body, headers=hdrs)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BenchError(f"{method} {lab.base}{path}: {exc!r}") from exc
            if status != 200:
                raise BenchError(f"{method} {lab.base}{path} answered {status}: {str(data)[:300]}")
            out[name] = data

        # The rate limit must not apply to the controller: 450 quick requests > burst 400 at 200r/s.
        async def one() -> int:
            async with s.get(lab.base + "/api/healthz") as r:
                return r.status

        statuses = await asyncio.gather(*[one() for _ in range(450)])
        if any(st == 429 for st in statuses):
            raise BenchError(
                "the edge rate-limits the controller (429): is bench/lab-vars.yml applied and is "
                f"{lab.controller} exempt (kraftwerk_edge_rate_limit_exempt)?"
            )
    return out


async def consumer_lag(lab: Lab) -> int | None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(lab))) as s:
        status, data = await http_json(s, "GET", lab.base + "/messages")
    if status != 200 or not isinstance(data, dict) or data.get("offsets_error"):
        return None
    return int(data.get("total_lag") or 0)


def settle(lab: Lab, limit: float) -> dict[str, Any]:
    """Wait (at most ``limit`` s) until the consumer group has caught up: its backlog would eat the next phase's CPU."""
    t0 = time.monotonic()
    lag: int | None = None
    zero = 0
    while time.monotonic() - t0 < limit:
        try:
            lag = asyncio.run(consumer_lag(lab))
        except (aiohttp.ClientError, TimeoutError, OSError):
            lag = None
        zero = zero + 1 if lag == 0 else 0
        if zero >= 2:  # two reads in a row (the consumer refreshes its offsets every 2 s)
            break
        time.sleep(2.2)
    waited = time.monotonic() - t0
    if zero < 2:
        log(f"  consumer lag still {lag} after {waited:.0f}s: the next phase shares the CPU with it")
    time.sleep(2)
    return {"waited_s": round(waited, 1), "lag": lag, "settled": zero >= 2}


# --- wrk ----------------------------------------------------------------------------------------------------


def wrk_phase(lab: Lab, mode: str, path: str, kind: str, duration: int, per_request: int = 1) -> dict[str, Any]:
    env = dict(
        os.environ,
        BENCH_MODE=mode,
        BENCH_PATH=path,
        BENCH_KIND=kind,
        BENCH_RECORD_BYTES="200",
        BENCH_BATCH=str(per_request),
        KRAFTWERK_API_KEY=lab.api_key,
    )
    cmd = [
        "wrk",
        "-t2",
        f"-c{CONNECTIONS}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "wrk.lua"),
        lab.base + path,
    ]
    meter = CpuMeter()
    res = run(cmd, duration + 60, env=env)
    cpu = meter.stop()
    data = bench_json(res.stdout)
    secs = data["duration_us"] / 1e6
    bad = sum(data["bad_per_epoch_second"].values())
    ok = sum(data["ok_per_epoch_second"].values())
    errors = sum(data["errors"].values()) - data["errors"]["status"]
    epochs = sorted(int(k) for k in data["ok_per_epoch_second"]) if data["ok_per_epoch_second"] else []
    # Whole seconds only: the first and the last wall-clock second of the run are partial.
    series = [data["ok_per_epoch_second"].get(str(t), 0) for t in range(epochs[0] + 1, epochs[-1])] if epochs else []
    lat = data["latency_us"]
    out = {
        "tool": "wrk",
        "command": shlex.join(cmd),
        "connections": CONNECTIONS,
        "duration_s": round(secs, 2),
        "ok": ok,
        "non_2xx": bad,
        "socket_errors": errors,
        "status_codes": data["bad_status_codes"],
        "req_per_s": round(ok / secs, 1),
        "msg_per_s": round(ok * per_request / secs, 1),
        "latency_ms": {k: round(v / 1000, 2) for k, v in lat.items() if v is not None},
        "per_second_ok": series,
        **cpu,
    }
    if bad or errors:
        log(f"  {bad} non-2xx answers {data['bad_status_codes']}, {errors} socket errors")
    return out


# --- end to end: POST /api/send -> GET /events ---------------------------------------------------------------


async def e2e_run(lab: Lab, rate: int, duration: float, run_id: str) -> dict[str, Any]:
    """Open loop: request i starts at t0 + i/rate (at most 256 in flight). Each record carries an id; the SSE
    reader notes when each (partition, offset) first shows in a `snapshot` event. The stream shows the newest
    10 records only, so a record overtaken in the same poll never shows itself: a record counts as delivered
    when it, or a later offset of its partition, is on the stream (the reader reads a partition in order)."""
    prefix = f"{run_id}-{rate}"
    hdrs = {"X-API-Key": lab.api_key, "Content-Type": "application/json"}
    first_seen: dict[tuple[int, int], float] = {}
    ids_seen: dict[str, float] = {}
    sent: list[dict[str, Any]] = []
    snapshots = 0
    ready = asyncio.Event()
    cap = 256

    conn = aiohttp.TCPConnector(ssl=ssl_context(lab), limit=cap + 4)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def reader() -> None:
            nonlocal snapshots
            timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
            async with s.get(lab.base + "/events", timeout=timeout, headers={"Accept": "text/event-stream"}) as r:
                if r.status != 200:
                    raise BenchError(f"GET /events answered {r.status}")
                ready.set()
                buf = b""
                data: list[bytes] = []
                async for chunk in r.content.iter_any():
                    t = time.monotonic()
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        line = line.rstrip(b"\r")  # noqa: PLW2901
                        if line.startswith(b"data:"):
                            data.append(line[5:].lstrip())
                        elif not line and data:
                            try:
                                snap = json.loads(b"\n".join(data))
                            except ValueError:
                                snap = {}
                            data = []
                            snapshots += 1
                            for m in snap.get("messages") or []:
                                first_seen.setdefault((m.get("partition"), m.get("offset")), t)
                                v = m.get("value")
                                if isinstance(v, dict) and str(v.get("id", "")).startswith(prefix):
                                    ids_seen.setdefault(v["id"], t)

        reader_task = asyncio.create_task(reader())
        try:
            await asyncio.wait_for(ready.wait(), 15)
        except TimeoutError as exc:
            reader_task.cancel()
            raise BenchError("the SSE stream (GET /events) did not open within 15 s") from exc
        sem = asyncio.Semaphore(cap)
        url = lab.base + "/api/send"

        async def one(i: int, sched: float) -> None:
            body = record("e2e", i, 200, f'"id":"{prefix}-{i}","ts":{time.time():.6f},')
            t0 = time.monotonic()
            status: int | str
            part = off = None
            try:
                async with s.post(url, data=body, headers=hdrs, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    status = r.status
                    js = await r.json(content_type=None)
                    if status == 200:
                        part, off = js.get("partition"), js.get("offset")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                status = type(exc).__name__
            finally:
                sem.release()
            sent.append(
                {
                    "i": i,
                    "sched": sched,
                    "t0": t0,
                    "t1": time.monotonic(),
                    "status": status,
                    "partition": part,
                    "offset": off,
                }
            )

        n = int(rate * duration)
        begin = time.monotonic() + 0.2
        tasks = []
        stop = begin + duration
        behind = 0.0
        for i in range(n):
            target = begin + i / rate
            if time.monotonic() >= stop:
                break  # the path holds less than the rate: the run stays ~duration long
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            behind = max(behind, time.monotonic() - target)
            tasks.append(asyncio.create_task(one(i, target)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(3)  # the stream's tail
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BenchError, aiohttp.ClientError):
            await reader_task

    # Delivered-by time of (p, o): the first moment an offset >= o of partition p was on the stream.
    by_part: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (p, o), t in first_seen.items():
        if isinstance(p, int) and isinstance(o, int):
            by_part[p].append((o, t))
    index: dict[int, tuple[list[int], list[float]]] = {}
    for p, items in by_part.items():
        items.sort()
        offs = [o for o, _ in items]
        suffix = [t for _, t in items]
        for k in range(len(suffix) - 2, -1, -1):
            suffix[k] = min(suffix[k], suffix[k + 1])
        index[p] = (offs, suffix)
    oks = [m for m in sent if m["status"] == 200]
    lat: list[float] = []
    direct: list[float] = []
    for m in oks:
        offs, suffix = index.get(m["partition"], ([], []))
        k = bisect.bisect_left(offs, m["offset"])
        if k < len(offs):
            m["e2e"] = suffix[k] - m["t0"]
            lat.append(m["e2e"])
        seen = ids_seen.get(f"{prefix}-{m['i']}")
        if seen is not None:
            direct.append(seen - m["t0"])
    http = [m["t1"] - m["t0"] for m in oks]
    starts = sorted(m["t0"] for m in sent)
    span = (starts[-1] - starts[0]) if len(starts) > 1 else duration
    secs = math.ceil(duration)
    per_sec: dict[str, list[Any]] = {"sent": [], "http_p50": [], "http_p99": [], "e2e_p50": [], "e2e_p99": []}
    buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for m in sent:
        buckets[int(m["t0"] - begin)].append(m)
    for k in range(secs):
        ms = buckets.get(k, [])
        h = [(m["t1"] - m["t0"]) * 1000 for m in ms if m["status"] == 200]
        e = [m["e2e"] * 1000 for m in ms if "e2e" in m]
        per_sec["sent"].append(len(ms))
        per_sec["http_p50"].append(rnd(percentile(h, 50)))
        per_sec["http_p99"].append(rnd(percentile(h, 99)))
        per_sec["e2e_p50"].append(rnd(percentile(e, 50)))
        per_sec["e2e_p99"].append(rnd(percentile(e, 99)))
    statuses: dict[str, int] = defaultdict(int)
    for m in sent:
        statuses[str(m["status"])] += 1
    return {
        "target_msg_per_s": rate,
        "achieved_msg_per_s": round(len(oks) / span, 1) if span > 0 else None,
        "max_behind_schedule_s": round(behind, 2),
        "requests": len(sent),
        "ok": len(oks),
        "statuses": dict(statuses),
        "delivered": len(lat),
        "shown_themselves": len(direct),
        "snapshots": snapshots,
        "e2e_ms": {"p50": pct_ms(lat, 50), "p99": pct_ms(lat, 99), "max": pct_ms(lat, 100)},
        "e2e_shown_ms": {"p50": pct_ms(direct, 50), "p99": pct_ms(direct, 99), "max": pct_ms(direct, 100)},
        "http_ms": {"p50": pct_ms(http, 50), "p99": pct_ms(http, 99), "max": pct_ms(http, 100)},
        "per_second": per_sec,
        "samples": [[round(m["t0"] - begin, 3), round(m["e2e"] * 1000, 1)] for m in oks if "e2e" in m][
            :: max(1, len(oks) // 4000)
        ],
    }


# --- the ceilings on the hosts -------------------------------------------------------------------------------


def producer_unit(lab: Lab) -> tuple[str, list[str]]:
    """The producer app's python (its venv) and env files, from its systemd unit on the producer host."""
    unit = f"kraftwerk-producer@{lab.producer_base_port}.service"
    out = ssh(lab, lab.app, f"systemctl show {unit} --property=ExecStart --property=EnvironmentFiles", 30).stdout
    m = re.search(r"ExecStart=\{ path=(\S+)/[^/\s]+ ;", out)
    files = re.findall(r"(?m)^EnvironmentFiles=(\S+)", out)
    if not m or not files:
        raise BenchError(f"cannot read {unit} on {lab.app} (ExecStart, EnvironmentFiles): {out.strip()[:300]}")
    return f"{m.group(1)}/python", files


def flat_phase(lab: Lab, duration: int, concurrency: int = 0) -> dict[str, Any]:
    python, env_files = producer_unit(lab)
    opts = [f"--concurrency={concurrency}"] if concurrency else []
    cmd = shlex.join([python, "-", str(duration), "200", *opts, *env_files])
    meter = CpuMeter()
    res = ssh(lab, lab.app, cmd, duration + 120, input_text=(BENCH / "aiokafka_flat.py").read_text())
    cpu = meter.stop()
    data = bench_json(res.stdout)
    data["host"] = lab.app
    data["python"] = python
    data.update(cpu)
    return data


def kafka_cli(lab: Lab, tool: str, args: str) -> str:
    return f"{tool} --bootstrap-server {lab.kafka}:9095 --command-config /etc/kafka/admin.properties {args}"


def perf_phase(
    lab: Lab, duration: int, app_cfg: dict[str, Any], topic: str, cleanup: list[Callable[[], None]]
) -> dict[str, Any]:
    desc = ssh(lab, lab.kafka, kafka_cli(lab, "kafka-topics", f"--describe --topic {shlex.quote(topic)}"), 120).stdout
    head = next((line for line in desc.splitlines() if "PartitionCount" in line), "")
    parts = re.search(r"PartitionCount:\s*(\d+)", head)
    rf = re.search(r"ReplicationFactor:\s*(\d+)", head)
    configs = dict(re.findall(r"([\w.]+)=([^,\s]+)", head.split("Configs:", 1)[1])) if "Configs:" in head else {}
    if not parts or not rf:
        raise BenchError(f"cannot describe {topic}: {desc[:300]}")
    keep = {
        k: v for k, v in configs.items() if k in ("min.insync.replicas", "message.timestamp.type", "compression.type")
    }
    payloads = "\n".join(record("perf", i, 200) for i in range(1, 2001))

    def drop() -> None:
        log(f"cleanup: delete topic {PERF_TOPIC} and {PERF_PAYLOADS} on {lab.kafka}")
        ssh(
            lab,
            lab.kafka,
            f"rm -f {PERF_PAYLOADS}; " + kafka_cli(lab, "kafka-topics", f"--delete --if-exists --topic {PERF_TOPIC}"),
            120,
            check=False,
        )

    cleanup.append(drop)
    create = (
        kafka_cli(lab, "kafka-topics", f"--delete --if-exists --topic {PERF_TOPIC}")
        + "; sleep 2; "
        + kafka_cli(
            lab,
            "kafka-topics",
            f"--create --topic {PERF_TOPIC} --partitions {parts.group(1)} --replication-factor {rf.group(1)} "
            + " ".join(f"--config {k}={v}" for k, v in keep.items()),
        )
    )
    ssh(lab, lab.kafka, f"cat > {PERF_PAYLOADS} && {create}", 180, input_text=payloads + "\n")
    props = {
        "bootstrap.servers": f"{lab.kafka}:9095",
        "acks": "all",
        "enable.idempotence": "true",
        "compression.type": app_cfg.get("compression_type") or "none",
        "linger.ms": str(app_cfg.get("linger_ms", 5)),
        "client.id": "kraftwerk-bench-perf",
    }
    perf = (
        f"timeout -s TERM {duration + 8} kafka-producer-perf-test --topic {PERF_TOPIC} --num-records 1000000000 "
        f"--throughput -1 --payload-file {PERF_PAYLOADS} --producer.config /etc/kafka/admin.properties "
        "--producer-props " + " ".join(f"{k}={v}" for k, v in props.items())
    )
    meter = CpuMeter()
    res = ssh(lab, lab.kafka, perf + "; true", duration + 90)
    cpu = meter.stop()
    windows = [
        {"records": int(m[0]), "rec_per_s": float(m[1]), "avg_ms": float(m[2]), "max_ms": float(m[3])}
        for m in re.findall(
            r"(\d+) records sent, ([\d.]+) records/sec \([\d.]+ MB/sec\), ([\d.]+) ms avg latency, "
            r"([\d.]+) ms max latency",
            res.stdout,
        )
    ]
    if len(windows) < 2:
        raise BenchError(
            "kafka-producer-perf-test reported fewer than 2 windows:\n" + (res.stdout + res.stderr)[-1500:]
        )
    steady = windows[1:]  # the first 5-s window holds the JVM's warm-up
    secs = sum(w["records"] / w["rec_per_s"] for w in steady if w["rec_per_s"] > 0)
    return {
        "tool": "kafka-producer-perf-test",
        "host": lab.kafka,
        "topic": f"{PERF_TOPIC} (like {topic}: {parts.group(1)} partitions, RF {rf.group(1)}, {keep})",
        "command": perf,
        "producer_props": props,
        "msg_per_s": round(sum(w["records"] for w in steady) / secs, 1) if secs else None,
        "windows": windows,
        "avg_latency_ms": round(sum(w["avg_ms"] for w in steady) / len(steady), 1),
        "max_latency_ms": max(w["max_ms"] for w in steady),
        **cpu,
    }


# --- report -------------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a and b else "-"


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}{unit}" if abs(x) >= 100 else f"{x:,.1f}{unit}"


CPU_COLUMNS = ("kafka", "producer", "consumer", "nginx", "seed", "loadgen", "kafka-cli", "other")


def cpu_rows(p: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(k, v) for k, v in p.items() if isinstance(v, dict) and "cpu_pct_by_component" in v]
    rows += [
        (f"e2e {e.get('target_msg_per_s')}", e) for e in (p.get("e2e") or {}).get("runs", [])
        if "cpu_pct_by_component" in e
    ]
    return rows


def report_md(r: dict[str, Any]) -> str:
    p = r["phases"]

    def get(name: str, *keys: str) -> Any:
        v: Any = p.get(name) or {}
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def http_cell(name: str) -> str:
        if "error" in (p.get(name) or {}):
            return f"failed: {p[name]['error'].splitlines()[0][:80]}"
        return f"{fmt(get(name, 'req_per_s'))} req/s, p99 {fmt(get(name, 'latency_ms', 'p99'))} ms"

    def msg_cell(name: str, label: str = "") -> str:
        if "error" in (p.get(name) or {}):
            return f"failed: {p[name]['error'].splitlines()[0][:80]}"
        return f"{label}{fmt(get(name, 'msg_per_s'))} msg/s"

    rows = [
        (
            "POST /api/send (wrk 32 conns)",
            http_cell("send"),
            "GET /api/healthz, same NGINX + app: " + http_cell("healthz"),
            ratio(get("send", "req_per_s"), get("healthz", "req_per_s")),
        ),
        (
            "POST /api/send",
            http_cell("send"),
            "seed-style producer (no ack awaited): " + http_cell("seed"),
            ratio(get("send", "req_per_s"), get("seed", "req_per_s")),
        ),
        (
            "POST /api/send",
            http_cell("send"),
            f"plain aiokafka, {CONNECTIONS} tasks each awaiting its ack (no HTTP): " + msg_cell("closed")
            + f", p99 {fmt(get('closed', 'latency_ms', 'p99'))} ms",
            ratio(get("send", "req_per_s"), get("closed", "msg_per_s")),
        ),
        (
            "POST /api/send/batch 100x200B",
            msg_cell("batch") + f" ({fmt(get('batch', 'req_per_s'))} req/s, p99 "
            f"{fmt(get('batch', 'latency_ms', 'p99'))} ms)",
            "plain aiokafka producer: " + msg_cell("flat"),
            ratio(get("batch", "msg_per_s"), get("flat", "msg_per_s")),
        ),
        (
            "POST /api/send/batch",
            msg_cell("batch"),
            "kafka-producer-perf-test: " + msg_cell("perf"),
            ratio(get("batch", "msg_per_s"), get("perf", "msg_per_s")),
        ),
        (
            "plain aiokafka producer",
            msg_cell("flat"),
            "kafka-producer-perf-test: " + msg_cell("perf"),
            ratio(get("flat", "msg_per_s"), get("perf", "msg_per_s")),
        ),
    ]
    for e in p.get("e2e", {}).get("runs", []):
        if "error" in e:
            rows.append((f"e2e POST->SSE at {e.get('target_msg_per_s')} msg/s", f"failed: {e['error'][:80]}", "-", "-"))
            continue
        ms = e["e2e_ms"]
        cell = (
            f"p50 {fmt(ms['p50'])} / p99 {fmt(ms['p99'])} / max {fmt(ms['max'])} ms (achieved "
            f"{fmt(e['achieved_msg_per_s'])} msg/s, {e['delivered']}/{e['ok']} delivered)"
        )
        rows.append((f"e2e POST->SSE at {e['target_msg_per_s']} msg/s", cell, "-", "-"))
    site = p.get("site") or {}
    if "seconds" in site:
        rebuilt = any(t.startswith("pyapp : Build the wheels") for t in site.get("changed_tasks", {}))
        if site["rc"] != 0 or site["failed"]:
            ok = "FAILED"
        elif site["changed"] == 0:
            ok = "ok"
        elif rebuilt:  # the apps' sources (apps/src) changed between the runs: a new release, not a flaw
            ok = "apps rebuilt: their sources changed during the bench"
        else:
            ok = "NOT IDEMPOTENT: see changed_tasks in results.json"
        conv = p.get("site-converge")
        first = f"; a first run converged the lab: {conv['seconds']:.0f} s, changed={conv['changed']}" if conv else ""
        rows.append(
            (
                "site.yml idempotent re-run",
                f"{site['seconds']:.0f} s, changed={site['changed']} ({ok}{first})",
                "-",
                "-",
            )
        )
    else:
        rows.append(("site.yml idempotent re-run", site.get("error", "skipped"), "-", "-"))
    lines = ["| path | measured | its ceiling in the same run | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    cfg = r.get("app_producer", {})
    notes = [
        f"# ./kw bench - {r['started']}",
        "",
        f"Command: `{r['command']}`  ",
        f"Inventory: `{r['inventory']}`, edge {r['edge']}, producer host {r['app_host']}, "
        f"Kafka host {r['kafka_host']}  ",
        f"Commit: `{r['git']}`; {r['cpus']} CPUs shared by every lab host and the load generators; load average at "
        f"start {r['loadavg_start']}  ",
        f"Producer settings (all paths): acks=all, idempotent, compression={cfg.get('compression_type') or 'none'}, "
        f"linger.ms={cfg.get('linger_ms')}; records ~200 B compact JSON, no key.  ",
        f"Total time: {r.get('total_seconds', 0):.0f} s",
        "",
        *lines,
        "",
        "Waited for the consumer's backlog before each phase, s: "
        + ", ".join(
            f"{k.removeprefix('before_')} {v['waited_s']}{'' if v['settled'] else ' (not settled)'}"
            for k, v in (r.get("settle") or {}).items()
        ),
        "",
        "Machine busy (all cores) during each phase, %: "
        + ", ".join(
            f"{k} {v.get('cpu_busy_pct')}" for k, v in p.items() if isinstance(v, dict) and "cpu_busy_pct" in v
        ),
        "",
        "Who used the CPU in each phase (% of all cores; loadgen = wrk, the e2e client, the aiokafka producer):",
        "",
        "| phase | busy | " + " | ".join(CPU_COLUMNS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in CPU_COLUMNS) + " |",
        *[
            f"| {k} | {v.get('cpu_busy_pct')} | "
            + " | ".join(str(v["cpu_pct_by_component"].get(c, 0)) for c in CPU_COLUMNS)
            + " |"
            for k, v in cpu_rows(p)
        ],
        "",
        "e2e: delivered = the record, or a later offset of its partition, was on the SSE stream (it shows the newest "
        "10 records only); latency from the start of the POST. See docs/benchmarks.md.",
        "",
        "![throughput](throughput.png)",
        "![latency](latency.png)",
    ]
    if r.get("errors"):
        notes += ["", "Errors:", *[f"- {e}" for e in r["errors"]]]
    return "\n".join(notes) + "\n"


def plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    p = r["phases"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 12))
    ax = axes[0]
    for name, label in (
        ("healthz", "GET /api/healthz"),
        ("seed", "POST /bench/seed/send (seed-style)"),
        ("send", "POST /api/send"),
    ):
        s = (p.get(name) or {}).get("per_second_ok") or []
        if s:
            ax.plot(range(len(s)), s, marker=".", label=label)
    ax.set_title(f"HTTP paths through NGINX, wrk {CONNECTIONS} connections: 2xx answers per second")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("req/s")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    b = (p.get("batch") or {}).get("per_second_ok") or []
    if b:
        ax.plot(range(len(b)), [x * 100 for x in b], marker=".", label="POST /api/send/batch (x100 records)")
    f = (p.get("flat") or {}).get("per_second") or []
    if f:
        ax.plot(range(len(f)), f, marker=".", label="plain aiokafka producer (acks per second)")
    w = (p.get("perf") or {}).get("windows") or []
    if w:
        xs, ys, t = [], [], 0.0
        for win in w:
            d = win["records"] / win["rec_per_s"] if win["rec_per_s"] else 5
            xs += [t, t + d]
            ys += [win["rec_per_s"]] * 2
            t += d
        ax.plot(xs, ys, label="kafka-producer-perf-test (5-s windows; the first is JVM warm-up)")
    ax.set_title("Records per second, acks=all")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("msg/s")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[2]
    for e in (p.get("e2e") or {}).get("runs", []):
        s = (e.get("per_second") or {}).get("sent") or []
        if s:
            ax.plot(range(len(s)), s, marker=".", label=f"POST /api/send at {e['target_msg_per_s']}/s (started)")
    ax.set_title("End-to-end runs: requests started per second (open loop)")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("req/s")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(3, 1, figsize=(11, 12))
    ax = axes[0]
    for e in (p.get("e2e") or {}).get("runs", []):
        sm = e.get("samples") or []
        if sm:
            ax.scatter([x for x, _ in sm], [y for _, y in sm], s=2, alpha=0.4, label=f"{e['target_msg_per_s']} msg/s")
    ax.set_yscale("log")
    ax.set_title("End-to-end latency POST /api/send -> SSE /events, per record (by send time)")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("ms")
    ax.legend(markerscale=5)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for e in (p.get("e2e") or {}).get("runs", []):
        ps = e.get("per_second") or {}
        if ps.get("http_p99"):
            ax.plot(
                range(len(ps["http_p99"])),
                ps["http_p99"],
                marker=".",
                label=f"POST /api/send p99 at {e['target_msg_per_s']}/s",
            )
    fp = (p.get("flat") or {}).get("latency_p99_ms_per_second") or []
    if fp:
        ax.plot(range(len(fp)), fp, marker=".", label="aiokafka flat out: enqueue->ack p99")
    ax.set_yscale("log")
    ax.set_title("Acknowledgement latency per second (p99)")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("ms")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[2]
    for name, label in (
        ("healthz", "GET /api/healthz"),
        ("seed", "seed-style"),
        ("send", "POST /api/send"),
        ("batch", "POST /api/send/batch"),
    ):
        s = (p.get(name) or {}).get("per_second_ok") or []
        if s:
            ax.plot(range(len(s)), [CONNECTIONS * 1000 / x if x else None for x in s], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_title(f"wrk runs: mean latency per second = {CONNECTIONS} connections / answers per second (Little's law)")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("ms")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------------------------------


def git_rev() -> str:
    try:
        rev = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], 10).stdout.strip()
        dirty = run(["git", "-C", str(ROOT), "status", "--porcelain"], 10).stdout.strip()
    except (BenchError, OSError):
        return "unknown"
    return rev + (" (with uncommitted changes)" if dirty else "")


def phase(r: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    log(f"phase {name}")
    t0 = time.monotonic()
    try:
        res = fn()
    except (BenchError, OSError, aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        log(f"  {name} FAILED: {exc}")
        r["errors"].append(f"{name}: {exc}")
        res = {"error": str(exc)}
    res["phase_seconds"] = round(time.monotonic() - t0, 1)
    r["phases"][name] = res
    summary = {
        k: v for k, v in res.items() if k in ("req_per_s", "msg_per_s", "latency_ms", "seconds", "changed", "error")
    }
    if summary:
        log(f"  {name}: {json.dumps(summary)}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inventory", nargs="?", default=os.environ.get("KRAFTWERK_BENCH_INVENTORY", "inventory/lab"))
    ap.add_argument("--duration", type=int, default=15, help="seconds of each throughput measurement (15)")
    ap.add_argument("--e2e-duration", type=int, default=20, help="seconds of each end-to-end rate (20)")
    ap.add_argument("--e2e-rates", default="100,500,1000", help="msg/s of the end-to-end runs (100,500,1000)")
    ap.add_argument("--settle", type=int, default=60, help="most seconds to wait for the consumer's backlog (60)")
    ap.add_argument("--skip-site", action="store_true", help="skip the timed site.yml re-run")
    ap.add_argument(
        "--remove",
        action="store_true",
        help="remove the seed-style producer and the bench's edge and "
        "firewall settings (runs bench/seed.yml without bench/lab-vars.yml), then exit",
    )
    ap.add_argument("--out", default=str(BENCH / "results"), help="results directory (bench/results)")
    args = ap.parse_args()
    os.chdir(ROOT)
    if shutil.which("wrk") is None:
        print("kwbench: wrk is missing (apt-get install wrk; ./kw bench installs it)", file=sys.stderr)
        return 2
    try:
        lab = load_lab(Path(args.inventory).resolve())
    except BenchError as exc:
        print(f"kwbench: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    out = Path(args.out) / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    log.path = out / "bench.log"
    if args.remove:
        res = playbook(lab, "seed-remove", BENCH / "seed.yml", ["-e", "kraftwerk_bench_seed_state=absent"], out, 1200)
        log(f"removed: rc={res['rc']} changed={res['changed']} (log {out / res['log']})")
        return 0 if res["rc"] == 0 else 1
    r: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["./kw", "bench", *sys.argv[1:]]),
        "inventory": str(lab.inv),
        "edge": lab.edge,
        "app_host": lab.app,
        "kafka_host": lab.kafka,
        "controller": lab.controller,
        "git": git_rev(),
        "cpus": os.cpu_count(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {
            "duration_s": args.duration,
            "e2e_duration_s": args.e2e_duration,
            "connections": CONNECTIONS,
            "record_bytes": 200,
            "batch_size": 100,
        },
        "phases": {},
        "errors": [],
    }
    cleanup: list[Callable[[], None]] = []
    t_start = time.monotonic()
    log(f"results in {out}")
    try:
        dep = playbook(lab, "seed-deploy", BENCH / "seed.yml", bench_vars(lab), out, 1200)
        r["phases"]["deploy"] = dep
        if dep["rc"] != 0:
            raise BenchError(f"bench/seed.yml failed (rc {dep['rc']}): see {out / dep['log']}")
        if not args.skip_site:
            site = phase(r, "site", lambda: playbook(lab, "site-rerun", ROOT / "site.yml", bench_vars(lab), out, 1500))
            if site.get("changed") and not site.get("rc"):
                # The lab was behind the working tree (e.g. the apps' sources changed since it was deployed): that
                # run converged it; the idempotent re-run is the next one.
                log(f"site.yml converged the lab ({site['changed']} changed): timing a second run")
                r["phases"]["site-converge"] = site
                site = phase(
                    r, "site", lambda: playbook(lab, "site-rerun-2", ROOT / "site.yml", bench_vars(lab), out, 1500)
                )
            if r["phases"].get("site-converge") or site.get("changed") or site.get("rc"):
                # It may have deployed a new release of the apps (a new venv): the seed-style producer follows.
                log("site.yml changed something: bench/seed.yml again (the seed-style producer runs the app's release)")
                dep = playbook(lab, "seed-deploy-2", BENCH / "seed.yml", bench_vars(lab), out, 1200)
                r["phases"]["deploy-2"] = dep
                if dep["rc"] != 0:
                    raise BenchError(f"bench/seed.yml failed (rc {dep['rc']}): see {out / dep['log']}")
        r["smoke"] = asyncio.run(smoke(lab))
        python, _ = producer_unit(lab)
        venv = ssh(lab, lab.app, f"readlink -f {shlex.quote(str(Path(python).parent.parent))}", 30).stdout.strip()
        if r["smoke"]["seed_config"].get("venv") != venv:
            raise BenchError(
                f"the seed-style producer runs {r['smoke']['seed_config'].get('venv')}, the producer {venv}: "
                "run bench/seed.yml (./kw bench does) so that both run the same release"
            )
        r["app_producer"] = {
            k: r["smoke"]["seed_config"].get(k)
            for k in (
                "compression_type",
                "linger_ms",
                "builder",
                "security_protocol",
                "sasl_mechanism",
                "topic",
                "venv",
            )
        }
        log(f"producer settings: {r['app_producer']}, venv {venv}")
        r["settle"] = {"before_http": settle(lab, args.settle)}
        phase(r, "healthz", lambda: wrk_phase(lab, "get", "/api/healthz", "healthz", args.duration))
        phase(r, "seed", lambda: wrk_phase(lab, "send", "/bench/seed/send", "seed", args.duration))
        r["settle"]["before_send"] = settle(lab, args.settle)
        phase(r, "send", lambda: wrk_phase(lab, "send", "/api/send", "send", args.duration))
        r["settle"]["before_closed"] = settle(lab, args.settle)
        phase(r, "closed", lambda: flat_phase(lab, args.duration, concurrency=CONNECTIONS))
        runs = []
        run_id = uuid.uuid4().hex[:8]
        for rate in [int(x) for x in args.e2e_rates.split(",") if x.strip()]:
            r["settle"][f"before_e2e_{rate}"] = settle(lab, args.settle)
            log(f"phase e2e at {rate} msg/s")
            meter = CpuMeter()
            try:
                e = asyncio.run(e2e_run(lab, rate, args.e2e_duration, run_id))
            except (BenchError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log(f"  e2e {rate} FAILED: {exc!r}")
                r["errors"].append(f"e2e {rate}: {exc!r}")
                e = {"target_msg_per_s": rate, "error": repr(exc)}
            e.update(meter.stop())
            log(
                f"  e2e {rate}: "
                + json.dumps({k: e.get(k) for k in ("achieved_msg_per_s", "ok", "delivered", "e2e_ms", "http_ms")})
            )
            runs.append(e)
        r["phases"]["e2e"] = {"runs": runs}
        r["settle"]["before_batch"] = settle(lab, args.settle)
        phase(r, "batch", lambda: wrk_phase(lab, "batch", "/api/send/batch", "batch", args.duration, per_request=100))
        r["settle"]["before_flat"] = settle(lab, args.settle)
        phase(r, "flat", lambda: flat_phase(lab, args.duration))
        r["settle"]["before_perf"] = settle(lab, args.settle)
        topic = r["app_producer"].get("topic") or "test-topic"
        phase(r, "perf", lambda: perf_phase(lab, args.duration + 5, r["app_producer"], topic, cleanup))
    except BenchError as exc:
        log(f"ABORTED: {exc}")
        r["errors"].append(f"aborted: {exc}")
    except KeyboardInterrupt:
        log("interrupted")
        r["errors"].append("interrupted")
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except (BenchError, OSError) as exc:
                log(f"cleanup failed: {exc}")
                r["errors"].append(f"cleanup: {exc}")
        r["total_seconds"] = round(time.monotonic() - t_start, 1)
        (out / "results.json").write_text(json.dumps(r, indent=1) + "\n")
        try:
            plots(r, out)
        except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
            log(f"plots failed: {exc!r}")
        (out / "results.md").write_text(report_md(r))
    print((out / "results.md").read_text())
    log(f"results: {out}/results.md, results.json, throughput.png, latency.png")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
