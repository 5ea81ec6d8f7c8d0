"""The kafka_reassign module against a real 4-node KRaft cluster, through ansible-playbook: no mock anywhere.

Starts 3 combined broker+controller nodes (the static quorum, ids 1-3) and broker-only node 4 on loopback from
the pinned jars (kafka_cluster.py: -Xmx256m each, stopped at the end, also on failure), creates two topics on
brokers 1-3 only and writes ~5 MB into one, then: rebalances onto broker 4 (check mode first), refuses to drain a
voter, drains broker 4, stops it and unregisters it; every step once more to prove it changes nothing. After
each move no replication throttle may be left on any broker or topic.

Runs by default in `./kw unit` (about 2 minutes on 2 cores); KRAFTWERK_SKIP_CLUSTER_TESTS=1 skips it.
Needs java and the jars (~/.cache/kraftwerk/kafka-3.9.1-maven/libs, fetched by lab/fetch-kafka-maven.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from kafka_cluster import Cluster  # noqa: E402

ROLE = HERE.parent
REPO = ROLE.parent.parent

# Under pytest-xdist (./kw unit: --dist loadgroup) one worker runs this file: one cluster, tests in order.
pytestmark = [pytest.mark.skipif(os.environ.get("KRAFTWERK_SKIP_CLUSTER_TESTS") == "1" or shutil.which("java") is None,
                                 reason="KRAFTWERK_SKIP_CLUSTER_TESTS=1, or no java"),
              pytest.mark.xdist_group("reassign-cluster")]

PLAYBOOK = """\
- name: Run kafka_reassign once
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Reassign
      kafka_reassign: "{{ kr_args }}"
      register: kr_result
      ignore_errors: true
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ kr_result | to_json }}"
        dest: "{{ kr_out }}"
        mode: "0600"
      check_mode: false
      diff: false
"""


class Lab:
    def __init__(self, cluster: Cluster, tmp: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp
        (tmp / "run.yml").write_text(PLAYBOOK)
        (tmp / "ansible.cfg").write_text(
            "[defaults]\nlibrary = %s\nmodule_utils = %s\ninterpreter_python = auto_silent\nlocalhost_warning = false\n"
            % (ROLE / "library", REPO / "plugins" / "module_utils"))
        self.runs = 0

    def module(self, *flags: str, **args: Any) -> dict[str, Any]:
        self.runs += 1
        out = self.tmp / ("result-%d.json" % self.runs)
        extra = self.tmp / ("vars-%d.json" % self.runs)
        base = {"bootstrap_server": self.cluster.bootstrap, "bin_dir": str(self.cluster.bin), "brokers": [1, 2, 3, 4],
                "throttle": 10 * 1024 * 1024, "poll_interval": 2, "deadline": 240, "timeout": 120,
                "progress_file": str(self.tmp / "progress.log")}
        extra.write_text(json.dumps({"kr_args": dict(base, **args), "kr_out": str(out),
                                     "ansible_python_interpreter": sys.executable}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        playbook = Path(sys.executable).parent / "ansible-playbook"
        proc = subprocess.run([str(playbook) if playbook.exists() else "ansible-playbook", "-i", "localhost,",
                               "-c", "local", str(self.tmp / "run.yml"), "-e", "@%s" % extra, *flags],
                              cwd=self.tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert out.exists(), "playbook did not run:\n%s\n%s" % (proc.stdout, proc.stderr)
        return json.loads(out.read_text())

    def assignment(self) -> dict[tuple[str, int], list[int]]:
        out = self.cluster.cli("kafka-topics", "--describe", "--exclude-internal").stdout
        result = {}
        for line in out.splitlines():
            if line.startswith("\tTopic:"):
                f = dict(part.split(": ", 1) for part in line.strip().split("\t") if ": " in part)
                result[(f["Topic"], int(f["Partition"]))] = [int(x) for x in f["Replicas"].split(",")]
        return result

    def throttles(self) -> list[str]:
        text = (self.cluster.cli("kafka-configs", "--describe", "--entity-type", "brokers").stdout
                + self.cluster.cli("kafka-configs", "--describe", "--entity-type", "topics").stdout)
        return [line.strip() for line in text.splitlines() if "throttled" in line]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        cluster.cli("kafka-topics", "--create", "--topic", "orders", "--replica-assignment", "1:2,2:3,3:1,1:2,2:3,3:1")
        cluster.cli("kafka-topics", "--create", "--topic", "audit", "--replica-assignment", "1:2:3,2:3:1",
                    "--config", "min.insync.replicas=2")
        cluster.cli("kafka-producer-perf-test", "--topic", "orders", "--num-records", "5000", "--record-size", "1000",
                    "--throughput", "-1", "--producer-props", "bootstrap.servers=" + cluster.bootstrap, "acks=all",
                    bootstrap=False)
        yield Lab(cluster, tmp_path_factory.mktemp("ansible"))
    finally:
        cluster.stop()


# The tests share one cluster and run in file order: each builds on the previous one.

def test_check_mode_shows_the_plan_and_changes_nothing(lab: Lab) -> None:
    before = lab.assignment()
    res = lab.module("--check", "--diff", action="rebalance")
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True and res["commands"] == []
    assert res["moves"] == 4 and res["replicas_before"] == {"1": 6, "2": 6, "3": 6, "4": 0}
    assert sorted(res["replicas_after"].values()) == [4, 4, 5, 5]
    assert lab.assignment() == before


def test_rebalance_onto_the_new_broker(lab: Lab) -> None:
    started = time.monotonic()
    res = lab.module(action="rebalance")
    elapsed = time.monotonic() - started
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True and res["moves"] == 4
    after = lab.assignment()
    counts = Counter(b for replicas in after.values() for b in replicas)
    assert sorted(counts.values()) == [4, 4, 5, 5] and counts[4] >= 4, after
    leaders = Counter(replicas[0] for replicas in after.values())
    assert max(leaders.values()) - min(leaders.values()) <= 1, after
    assert res["progress"] and "partitions done" in res["progress"][-1]
    assert lab.throttles() == []
    print("rebalance took %.1f s; progress: %s" % (elapsed, res["progress"]))  # noqa: T201


def test_rebalance_again_changes_nothing(lab: Lab) -> None:
    res = lab.module(action="rebalance")
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is False and res["plan"] == [] and res["commands"] == []


def test_draining_a_voter_is_refused(lab: Lab) -> None:
    before = lab.assignment()
    res = lab.module(action="drain", drain_brokers=[2])
    assert res.get("failed") is True
    assert "node 2 is a controller, a voter of the static quorum (1,2,3)" in res["msg"]
    assert "Nothing was changed" in res["msg"] and res["commands"] == []
    assert lab.assignment() == before


def test_drain_the_broker_only_node(lab: Lab) -> None:
    res = lab.module(action="drain", drain_brokers=[4])
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True
    after = lab.assignment()
    assert all(4 not in replicas for replicas in after.values()), after
    counts = Counter(b for replicas in after.values() for b in replicas)
    assert sorted(counts.values()) == [6, 6, 6]
    assert lab.throttles() == []
    again = lab.module(action="drain", drain_brokers=[4])
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False and again["commands"] == []


def test_unregister_the_stopped_node(lab: Lab) -> None:
    lab.cluster.stop_node(4)
    res = lab.module(action="unregister", drain_brokers=[4])
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True and res["unregistered"] == [4]
    again = lab.module(action="unregister", drain_brokers=[4])
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False and again["unregistered"] == []
    # Broker 4 is unknown to the cluster now: a reassignment onto it is refused by Kafka.
    refused = lab.module(action="rebalance")
    assert refused.get("failed") is True and "Unknown broker id 4" in refused["msg"], refused["msg"]
    assert lab.throttles() == []
