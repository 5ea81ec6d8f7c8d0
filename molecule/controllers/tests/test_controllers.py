"""Dedicated KRaft controllers: the quorum is the controllers', the data the brokers', and restarts roll.

Three controller-only nodes (group ``kafka_controller``) and three broker-only nodes (group ``kafka``). Every
wait is for a condition with a deadline. The rolling restart under load writes its counts to
``$KRAFTWERK_RESULTS_DIR/controllers-rolling-restart.json`` (default: the temporary directory) and prints them.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kraftwerk_molecule_common import ADMIN_CONFIG, INVENTORY, ROOT, address, host, hosts_of, playbook
from loadgen import Load, assert_nothing_lost, read_back, tally

CONTROLLERS = hosts_of("kafka_controller")
BROKERS = hosts_of("kafka")
EDGE_IP = address(hosts_of("nginx")[0])
TOPIC = "test-topic"
BOOTSTRAP = ",".join(f"{address(h)}:9095" for h in BROKERS)


def node_id(name: str) -> int:
    meta = host(name).file("/var/lib/kafka/data/meta.properties").content_string
    return int(re.search(r"^node\.id=(\d+)$", meta, re.M).group(1))  # type: ignore[union-attr]


def props(name: str) -> dict[str, str]:
    text = host(name).file("/etc/kafka/server.properties").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def quorum(section: str) -> str:
    return host(BROKERS[0]).check_output(
        f"kafka-metadata-quorum --bootstrap-server {BOOTSTRAP} --command-config {ADMIN_CONFIG} describe --{section}")


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(1)


def test_the_inventory_has_three_controllers_and_three_brokers() -> None:
    assert len(CONTROLLERS) == 3 and len(BROKERS) == 3, (CONTROLLERS, BROKERS)


@pytest.mark.parametrize("name", CONTROLLERS)
def test_a_controller_runs_the_controller_role_only(name: str) -> None:
    p = props(name)
    assert p["process.roles"] == "controller", p["process.roles"]
    assert p["listeners"].count("://") == 1 and p["listeners"].startswith("CONTROLLER_SSL://"), p["listeners"]
    assert host(name).service("kafka").is_running


@pytest.mark.parametrize("name", BROKERS)
def test_a_broker_runs_the_broker_role_only(name: str) -> None:
    p = props(name)
    assert p["process.roles"] == "broker", p["process.roles"]
    assert "CONTROLLER_SSL://" not in p["listeners"], p["listeners"]
    voters = {f"{node_id(c)}@{address(c)}:9096" for c in CONTROLLERS}
    assert set(p["controller.quorum.voters"].split(",")) == voters, p["controller.quorum.voters"]


def test_the_voters_are_the_controllers_and_the_observers_the_brokers() -> None:
    status = quorum("status")
    # 3.9: CurrentVoters: [{"id": 1, "directoryId": ..., "endpoints": [...]}, ...] (3.8: [1,2,3])
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1] for line in status.splitlines() if ":" in line}
    voters = {int(x) for x in re.findall(r'"id":\s*(\d+)', lines["CurrentVoters"]) or re.findall(r"\d+", lines["CurrentVoters"])}
    assert voters == {node_id(c) for c in CONTROLLERS}, status
    observers = {int(x) for x in re.findall(r'"id":\s*(\d+)', lines["CurrentObservers"]) or re.findall(r"\d+", lines["CurrentObservers"])}
    assert observers == {node_id(b) for b in BROKERS}, status


def test_test_topic_lives_on_the_brokers_only() -> None:
    out = host(BROKERS[0]).check_output(
        f"kafka-topics --bootstrap-server {BOOTSTRAP} --command-config {ADMIN_CONFIG} --describe --topic {TOPIC}")
    replicas = {int(x) for x in re.findall(r"Replicas:\s+([\d,]+)", out) for x in x.split(",")}
    assert replicas == {node_id(b) for b in BROKERS}, out


@pytest.mark.parametrize("app", ["producer", "consumer"])
def test_the_apps_never_bootstrap_from_a_controller(app: str) -> None:
    env = host(hosts_of(app)[0]).file(f"/etc/kraftwerk-{app}/kraftwerk-{app}.env").content_string
    servers = re.search(r'^KRAFTWERK_BOOTSTRAP_SERVERS="([^"]*)"', env, re.M).group(1).split(",")  # type: ignore[union-attr]
    assert {s.rsplit(":", 1)[0] for s in servers} == {address(b) for b in BROKERS}, servers
    assert not {address(c) for c in CONTROLLERS} & {s.rsplit(":", 1)[0] for s in servers}


def test_the_gate_refuses_to_take_a_second_controller_down() -> None:
    """With one controller stopped, stopping another would leave no majority: the before-gate must say no."""
    down, other = CONTROLLERS[0], CONTROLLERS[1]
    host(down).run_expect([0], "systemctl stop kafka")
    try:
        wait_for(lambda: str(node_id(down)) not in _caught_up_voters(), 120, f"{down} to fall behind the quorum")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") or k == "ANSIBLE_VAULT_PASSWORD_FILE"}
        env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="False")
        args = (f"phase=before node_id={node_id(other)} bootstrap_server={BOOTSTRAP} command_config={ADMIN_CONFIG} "
                "default_min_insync_replicas=2 kafka_topics_bin=/usr/local/bin/kafka-topics "
                "kafka_metadata_quorum_bin=/usr/local/bin/kafka-metadata-quorum timeout=90")
        res = subprocess.run(
            ["ansible", BROKERS[0], "-i", INVENTORY, "-M", str(ROOT / "roles/kafka/library"), "-m", "kafka_gate",
             "-a", args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0, out
        assert "FAILED" in out and f"stopping voter {node_id(other)}" in out and "no majority" in out, out
    finally:
        host(down).run_expect([0], "systemctl start kafka")
    wait_for(lambda: str(node_id(down)) in _caught_up_voters(), 300, f"{down} back in the quorum")


def _caught_up_voters() -> set[str]:
    """Voter ids the gate counts as caught up (kafka_gate's defaults): the leader, and followers at most 20 records
    behind it that fetched within 10 s of its clock (``describe --replication``)."""
    lines = [line.split() for line in quorum("replication").splitlines() if line.strip()]
    header = lines[0]
    rows = [dict(zip(header, cols)) for cols in lines[1:] if len(cols) >= len(header)]
    now = max(int(r["LastFetchTimestamp"]) for r in rows if r["Status"] == "Leader")
    return {r["NodeId"] for r in rows if r["Status"] == "Leader"
            or (r["Status"] == "Follower" and r["Lag"].isdigit() and int(r["Lag"]) <= 20
                and now - int(r["LastFetchTimestamp"]) <= 10_000)}


def test_every_node_restarts_one_at_a_time_behind_the_gates_under_load(tls: ssl.SSLContext, api_key: str) -> None:
    run_id = uuid.uuid4().hex[:10]
    load = Load(EDGE_IP, api_key, tls, run_id)
    load.start()
    try:
        wait_for(lambda: load.acked_count() >= 200, 120, "200 acknowledged messages before the restart")
        load.phase = "rolling"
        started = time.monotonic()
        # Six nodes, each behind two gates: longer than one play's default limit on a busy 2-core machine.
        res = playbook("playbooks/rolling-restart.yml", timeout=2400)
        duration = round(time.monotonic() - started, 1)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        acked = load.acked_count()
        load.phase = "after"
        wait_for(lambda: load.acked_count() >= acked + 100, 120, "acknowledgements after the restart")
    finally:
        load.stop()

    # The order of the play: for each node, before-gate -> restart -> listeners -> after-gate, never interleaved.
    steps = re.findall(r"TASK \[kafka : (Gate - .*?(before|after) (\S+)|Restart Kafka on (\S+))\]", res.stdout)
    seq = [(s[1] or "restart", s[2] or s[3]) for s in steps]
    nodes = [n for kind, n in seq if kind == "restart"]
    assert sorted(nodes) == sorted(CONTROLLERS + BROKERS), seq
    assert seq == [(k, n) for n in nodes for k in ("before", "restart", "after")], seq

    counts = tally(load.result, read_back(host(BROKERS[0]), BOOTSTRAP, ADMIN_CONFIG, TOPIC, run_id))
    summary = {"command": "molecule test -s controllers (test_controllers.py)", "rolling_restart_s": duration,
               "restarted": nodes, **counts}
    out = Path(os.environ.get("KRAFTWERK_RESULTS_DIR", tempfile.gettempdir())) / "controllers-rolling-restart.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))  # noqa: T201 - the numbers the closing note quotes
    assert_nothing_lost(load.result, counts)
    assert counts["server_errors"].get("rolling", 0) == 0, counts["statuses"].get("rolling")
