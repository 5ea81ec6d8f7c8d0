"""Unit tests for the kafka_gate module's pure functions (parsing and the restart conditions).

The fixtures are real, unedited output of Kafka 3.9.1's CLIs on the 3-node Molecule lab (combined
broker+controller nodes 1-3, test-topic and test-topic.dlq with RF 3 and min.insync.replicas=2):
  topics-describe-3.9.1.txt:      kafka-topics --describe
  quorum-replication-3.9.1.txt:   kafka-metadata-quorum describe --replication
Degraded states are derived from them by the helpers below (a node taken out of an ISR, a lagging voter).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kafka_test_support import load_module

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

gate = load_module("kafka_gate", HERE.parent / "library" / "kafka_gate.py")


def partitions() -> list[dict[str, Any]]:
    return gate.parse_partitions((FIXTURES / "topics-describe-3.9.1.txt").read_text(), 1)


def quorum() -> list[dict[str, Any]]:
    return gate.parse_quorum((FIXTURES / "quorum-replication-3.9.1.txt").read_text())


def without(parts: list[dict[str, Any]], node: int, topic: str = "test-topic", partition: int | None = None) -> None:
    for p in parts:
        if p["topic"] == topic and (partition is None or p["partition"] == partition):
            p["isr"] = [b for b in p["isr"] if b != node]


def lagging(voters: list[dict[str, Any]], node: int, lag: int = 5000) -> list[dict[str, Any]]:
    return [{**v, "lag": lag} if v["node_id"] == node else v for v in voters]


def test_parse_partitions_reads_every_partition_with_its_min_isr() -> None:
    parts = partitions()
    assert len(parts) == 12
    assert {p["topic"] for p in parts} == {"test-topic", "test-topic.dlq"}
    first = parts[0]
    assert first == {"topic": "test-topic", "partition": 0, "leader": 3, "replicas": [3, 1, 2], "isr": [3, 1, 2],
                     "min_isr": 2}


def test_parse_partitions_uses_the_default_min_isr_without_an_override() -> None:
    text = ("Topic: t\tTopicId: x\tPartitionCount: 1\tReplicationFactor: 2\tConfigs: \n"
            "\tTopic: t\tPartition: 0\tLeader: none\tReplicas: 1,2\tIsr: \tElr: \tLastKnownElr: \n")
    [p] = gate.parse_partitions(text, 2)
    assert p["min_isr"] == 2 and p["leader"] == -1 and p["isr"] == []


def test_parse_quorum() -> None:
    voters = quorum()
    assert sorted(v["node_id"] for v in voters) == [1, 2, 3]
    assert [v["status"] for v in voters].count("Leader") == 1
    assert all(v["lag"] == 0 for v in voters)


@pytest.mark.parametrize("node", [1, 2, 3])
def test_a_healthy_cluster_may_restart_any_node(node: int) -> None:
    assert gate.evaluate("before", node, partitions(), quorum(), 20) == []
    assert gate.evaluate("after", node, partitions(), quorum(), 20) == []
    assert gate.evaluate("healthy", None, partitions(), quorum(), 20) == []


def test_not_before_the_last_restarted_node_is_back_in_the_isr() -> None:
    parts = partitions()
    without(parts, 2)  # node 2 was just restarted and has not caught up yet
    reasons = gate.evaluate("before", 3, parts, quorum(), 20)
    assert reasons and "below min.insync.replicas" in reasons[0]
    assert "test-topic-0" in reasons[0]
    # ...and node 2 itself is reported as not back yet
    after = gate.evaluate("after", 2, parts, quorum(), 20)
    assert after and "not in the ISR of 6 partition(s)" in after[0]


def test_restarting_the_node_that_is_out_of_the_isr_is_safe() -> None:
    parts = partitions()
    without(parts, 2, partition=0)
    assert gate.evaluate("before", 2, parts, quorum(), 20) == []


def test_a_partition_at_min_isr_blocks_only_the_nodes_in_its_isr() -> None:
    parts = partitions()
    for p in parts:
        if p["topic"] == "test-topic" and p["partition"] == 1:
            p["min_isr"], p["isr"] = 3, [1, 2, 3]
    assert gate.evaluate("before", 1, parts, quorum(), 20)
    parts = [p for p in parts if p["topic"] != "test-topic" or p["partition"] != 1]
    assert gate.evaluate("before", 1, parts, quorum(), 20) == []


def test_no_majority_of_caught_up_voters_without_the_node() -> None:
    voters = lagging(quorum(), 2)
    leader = next(v["node_id"] for v in voters if v["status"] == "Leader")
    third = ({1, 2, 3} - {2, leader}).pop()
    reasons = gate.evaluate("before", third, partitions(), voters, 20)
    assert reasons and "no majority" in reasons[0]
    assert gate.evaluate("before", 2, partitions(), voters, 20) == []  # the lagging voter itself may go


def test_after_waits_for_a_voter_to_catch_up() -> None:
    assert gate.evaluate("after", 2, partitions(), lagging(quorum(), 2), 20)
    assert gate.evaluate("after", 2, partitions(), lagging(quorum(), 2, lag=3), 20) == []


def test_no_leader_is_never_healthy() -> None:
    voters = [{**v, "status": "Follower"} for v in quorum()]
    for phase, node in (("before", 1), ("after", 1), ("healthy", None)):
        assert any("no leader" in r for r in gate.evaluate(phase, node, partitions(), voters, 20))


def test_an_rf1_partition_on_the_node_blocks_its_restart() -> None:
    parts = partitions() + [{"topic": "single", "partition": 0, "leader": 1, "replicas": [1], "isr": [1],
                             "min_isr": 2}]
    reasons = gate.evaluate("before", 1, parts, quorum(), 20)
    assert reasons and "single-0" in reasons[0]
    assert gate.evaluate("before", 2, parts, quorum(), 20) == []


def test_a_voter_that_stopped_fetching_is_not_caught_up_even_without_lag() -> None:
    """Voter 1 stopped 30 s ago; the leader appended no record since (lag 0): it must not count for a majority."""
    voters = quorum()
    leader = next(v for v in voters if v["status"] == "Leader")
    for v in voters:
        if v["node_id"] == 1:
            v["last_fetch_ms"] = leader["last_fetch_ms"] - 30_000
    reasons = gate.evaluate("before", 2, partitions(), voters, 20)
    assert reasons and "stopping voter 2 leaves 1 caught-up voter(s) of 3: no majority (lagging: [1])" in reasons[0]
    assert gate.evaluate("after", 1, partitions(), voters, 20) == ["voter 1 is not caught up with the quorum leader yet"]
    # Within the allowed fetch age it counts again (the control case).
    assert gate.evaluate("before", 2, partitions(), voters, 20, max_fetch_age_ms=60_000) == []


def test_parse_quorum_reads_the_fetch_times() -> None:
    voters = {v["node_id"]: v for v in quorum()}
    assert voters[3]["last_fetch_ms"] == 1795605061216 and voters[1]["last_fetch_ms"] == 1795605061108


def test_a_failed_read_at_the_deadline_keeps_what_the_last_read_said(tmp_path: Path) -> None:
    """The module's loop, run as Ansible runs it (a JSON args file), with CLIs that answer once and then time out
    or fail: the failure names the CLI's error *and* the condition the last successful read found (here a lagging
    voter), not only "kafka-topics failed"."""
    calls = tmp_path / "calls"
    quorum_text = "\n".join(
        "\t".join(cols) for cols in (
            ["NodeId", "DirectoryId", "LogEndOffset", "Lag", "LastFetchTimestamp", "LastCaughtUpTimestamp", "Status"],
            ["1", "x", "100", "0", "1000000", "1000000", "Leader"],
            ["2", "x", "100", "0", "999000", "999000", "Follower"],
            ["3", "x", "40", "60", "900000", "900000", "Follower"]))
    for name, text in (("topics", (FIXTURES / "topics-describe-3.9.1.txt").read_text()), ("quorum", quorum_text)):
        data = tmp_path / f"{name}.txt"
        data.write_text(text + "\n")
        # The first call prints the real output; every later one fails like a CLI that could not connect.
        script = tmp_path / name
        script.write_text(
            "#!/bin/sh\n"
            f"echo {name} >> {calls}\n"
            f"if [ $(grep -c {name} {calls}) -gt 1 ]; then echo 'Timed out waiting for a node' >&2; exit 1; fi\n"
            f"cat {data}\n")
        script.chmod(0o755)
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "phase": "before", "node_id": 2, "bootstrap_server": "127.0.0.1:1", "timeout": 3, "interval": 1,
        "kafka_topics_bin": str(tmp_path / "topics"), "kafka_metadata_quorum_bin": str(tmp_path / "quorum")}}))
    res = subprocess.run([sys.executable, str(HERE.parent / "library" / "kafka_gate.py"), str(args)],
                         capture_output=True, text=True, timeout=60, check=False)
    out = json.loads(res.stdout)
    assert out.get("failed") is True, out
    assert "Timed out waiting for a node" in out["msg"], out["msg"]
    assert "last read of the cluster: stopping voter 2 leaves 1 caught-up voter(s) of 3: no majority" in out["msg"]
    assert calls.read_text().count("quorum") >= 2  # it did poll again after the good read
