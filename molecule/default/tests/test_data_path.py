"""The data path on the real lab: every codec, poison records, a broker killed and a rolling restart under load.

Everything goes through the real edge (HTTPS, NGINX), the real apps and the real 3-node Kafka 3.9.1; the
Kafka CLI runs on kafka1. Every wait is for a condition, with a deadline.

The load test writes its counts to ``$KRAFTWERK_RESULTS_DIR/data-path-under-faults.json`` (default: the
temporary directory) and prints them.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_CONFIG, address, eventually, host, hosts_of, playbook
from loadgen import Load, assert_nothing_lost, read_back, tally

KAFKA = hosts_of("kafka")
EDGE_IP = address(hosts_of("nginx")[0])
TOPIC, DLQ, GROUP = "test-topic", "test-topic.dlq", "kraftwerk-consumer"
CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.fixture(scope="module")
def kafka1() -> Any:
    return host(KAFKA[0])


@pytest.fixture(scope="module")
def bootstrap() -> str:
    return ",".join(f"{address(h)}:9095" for h in KAFKA)


def get_json(tls: ssl.SSLContext, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"https://{EDGE_IP}{path}", context=tls, timeout=15) as resp:  # noqa: S310
        data: dict[str, Any] = json.load(resp)
        return data


def console_produce(kafka1: Any, bootstrap: str, topic: str, lines: list[str], *extra: str) -> None:
    payload = "\n".join(lines).replace("'", "'\"'\"'")
    res = kafka1.run(
        f"printf '%s\\n' '{payload}' | kafka-console-producer --bootstrap-server {bootstrap} --producer.config {ADMIN_CONFIG} --topic {topic} "
        f"--producer-property acks=all {' '.join(extra)}")
    assert res.rc == 0, res.stderr


def group_lag(kafka1: Any, bootstrap: str) -> dict[int, int] | None:
    """Lag per partition of test-topic for the apps' group, or None while the group is rebalancing."""
    res = kafka1.run(f"kafka-consumer-groups --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --describe --group {GROUP}")
    lags = {}
    for line in res.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[1] == TOPIC and cols[2].isdigit() and cols[4].isdigit():
            # CURRENT-OFFSET and LAG are "-" while the group has committed nothing on a partition.
            committed = int(cols[3]) if cols[3].isdigit() else 0
            lags[int(cols[2])] = int(cols[4]) - committed
    return lags if res.rc == 0 and lags else None


def read_topic(kafka1: Any, bootstrap: str, topic: str) -> list[str]:
    """Every record value of a topic (the console consumer ends when nothing came for 15 s)."""
    group = f"kraftwerk-check-{uuid.uuid4().hex[:8]}"
    res = kafka1.run(
        f"kafka-console-consumer --bootstrap-server {bootstrap} --consumer.config {ADMIN_CONFIG} --topic {topic} --from-beginning "
        f"--timeout-ms 15000 --group {group}")
    kafka1.run(f"kafka-consumer-groups --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --delete --group {group}")
    return res.stdout.splitlines()


# --- Every codec, and poison records ------------------------------------------------------------------


def test_records_of_every_codec_from_the_console_producer_show_on_the_page(
        kafka1: Any, bootstrap: str, tls: ssl.SSLContext) -> None:
    consumers = {get_json(tls, "/messages")["instance"] for _ in range(6)}
    for codec in CODECS:
        marker = f"{codec}-{uuid.uuid4().hex}"
        console_produce(kafka1, bootstrap, TOPIC, [json.dumps({"codec": codec, "marker": marker})],
                        "--compression-codec", codec)

        def shown_everywhere(marker: str = marker) -> bool:
            seen = set()
            for _ in range(6):
                snap = get_json(tls, "/messages")
                if any(m["valid_json"] and m["value"].get("marker") == marker for m in snap["messages"]):
                    seen.add(snap["instance"])
            return seen == consumers

        eventually(shown_everywhere, 60, f"the {codec} record on every consumer instance")
    lags = eventually(lambda: (lag := group_lag(kafka1, bootstrap)) and all(v == 0 for v in lag.values()) and lag,
                      120, "the group to process every codec's record (lag 0)", every=2)
    assert set(lags) == set(range(6))


def test_a_poison_run_reaches_the_dlq_once_each_and_does_not_stall_the_group(
        kafka1: Any, bootstrap: str, tls: ssl.SSLContext) -> None:
    marker = uuid.uuid4().hex
    n = 100
    console_produce(kafka1, bootstrap, TOPIC, [f"poison-{marker}-{i} is not JSON" for i in range(n)],
                    "--compression-codec", "lz4")
    console_produce(kafka1, bootstrap, TOPIC, [json.dumps({"after_poison": marker})])
    eventually(lambda: (lag := group_lag(kafka1, bootstrap)) and all(v == 0 for v in lag.values()),
               180, "the group to get past the poison run (lag 0)", every=2)
    snap = get_json(tls, "/messages")
    poison = [m for m in snap["messages"] if not m["valid_json"] and marker in (m.get("raw") or "")]
    assert poison, snap["messages"]
    dead = Counter(line for line in read_topic(kafka1, bootstrap, DLQ) if marker in line)
    assert len(dead) == n, f"{len(dead)} of {n} poison records in the DLQ"
    assert max(dead.values()) == 1, [k for k, v in dead.items() if v > 1][:5]


# --- A broker killed, then a rolling restart, under load ------------------------------------------------


def quorum_leader(kafka1: Any, bootstrap: str) -> int:
    out = kafka1.check_output(f"kafka-metadata-quorum --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} describe --status")
    return int(re.search(r"LeaderId:\s+(\d+)", out).group(1))  # type: ignore[union-attr]


def node_host(node_id: int) -> str:
    for name in KAFKA:
        meta = host(name).file("/var/lib/kafka/data/meta.properties").content_string
        if re.search(rf"^node\.id={node_id}$", meta, re.M):
            return name
    raise AssertionError(f"no host has node id {node_id}")


def no_under_replicated(kafka1: Any, bootstrap: str) -> bool:
    res = kafka1.run(f"kafka-topics --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --describe --under-replicated-partitions")
    return res.rc == 0 and not res.stdout.strip()


def test_send_survives_a_broker_kill_and_a_rolling_restart(
        kafka1: Any, bootstrap: str, tls: ssl.SSLContext, api_key: str) -> None:
    run_id = uuid.uuid4().hex[:10]
    load = Load(EDGE_IP, api_key, tls, run_id)
    timings: dict[str, float] = {}
    load.start()
    try:
        load.phase = "warmup"
        eventually(lambda: load.acked_count() >= 200, 120, "200 acknowledged messages before the faults")

        # SIGKILL the JVM of the node that leads the metadata quorum; systemd brings it back.
        load.phase = "kill"
        victim = node_host(quorum_leader(kafka1, bootstrap))
        pid_before = host(victim).check_output("systemctl show -p MainPID --value kafka")
        started = time.monotonic()
        host(victim).run_expect([0], f"kill -9 {pid_before}")
        eventually(lambda: host(victim).check_output("systemctl show -p MainPID --value kafka") not in ("0", pid_before)
                   and host(victim).service("kafka").is_running, 120, f"systemd to restart kafka on {victim}")
        eventually(lambda: no_under_replicated(kafka1, bootstrap), 300,
                   f"{victim} back in every ISR after the kill", every=3)
        timings["kill_to_back_in_sync_s"] = round(time.monotonic() - started, 1)
        acked_after_kill = load.acked_count()
        eventually(lambda: load.acked_count() >= acked_after_kill + 100, 120, "acknowledgements after the kill")

        # A rolling restart of all three nodes through the play's gates.
        load.phase = "rolling"
        started = time.monotonic()
        res = playbook("playbooks/rolling-restart.yml")
        timings["rolling_restart_s"] = round(time.monotonic() - started, 1)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        restarted = re.findall(r"TASK \[kafka : Restart Kafka on (\S+)\]", res.stdout)
        assert sorted(restarted) == sorted(KAFKA), restarted
        acked_after_rolling = load.acked_count()
        eventually(lambda: load.acked_count() >= acked_after_rolling + 100, 120, "acknowledgements after the restart")
        load.phase = "after"
    finally:
        load.stop()

    result = load.result
    counts = tally(result, read_back(kafka1, bootstrap, ADMIN_CONFIG, TOPIC, run_id))
    summary = {
        "command": "molecule test (verify: test_data_path.py::test_send_survives_a_broker_kill_and_a_rolling_restart)",
        "victim": victim,
        **counts,
        **timings,
    }
    out = Path(os.environ.get("KRAFTWERK_RESULTS_DIR", tempfile.gettempdir())) / "data-path-under-faults.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))  # noqa: T201 - the numbers the closing note quotes

    assert_nothing_lost(result, counts)
    assert summary["server_errors"].get("rolling", 0) == 0, summary["statuses"].get("rolling")
