"""The kafka_topic module against a real Kafka broker, through ansible-playbook: no mock anywhere.

Runs when both variables are set (otherwise every test is skipped):
  KRAFTWERK_TEST_BOOTSTRAP  host:port of a running broker, e.g. 127.0.0.1:39092
  KRAFTWERK_TEST_KAFKA_BIN  directory holding the kafka-topics and kafka-configs launchers
When they are set but the broker cannot be reached or the launchers are missing, the tests fail.

Topics are created with replication factor 1 (works on a single broker) under a fresh prefix, and deleted
at the end. Example:
  KRAFTWERK_TEST_BOOTSTRAP=127.0.0.1:39092 KRAFTWERK_TEST_KAFKA_BIN=/tmp/lab/bin \
    pytest -v roles/kafka_topics/tests/test_module_real.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ROLE = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("KRAFTWERK_TEST_BOOTSTRAP", "")
KAFKA_BIN = os.environ.get("KRAFTWERK_TEST_KAFKA_BIN", "")

pytestmark = pytest.mark.skipif(
    not (BOOTSTRAP and KAFKA_BIN),
    reason="set KRAFTWERK_TEST_BOOTSTRAP and KRAFTWERK_TEST_KAFKA_BIN to run against a real broker")

PLAYBOOK = """\
- name: Run kafka_topic once
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Keep the topics
      kafka_topic:
        bootstrap_server: "{{ kt_bootstrap }}"
        topics: "{{ kt_topics }}"
        kafka_topics_bin: "{{ kt_bin }}/kafka-topics"
        kafka_configs_bin: "{{ kt_bin }}/kafka-configs"
        timeout: 90
      register: kt_result
      ignore_errors: true
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ kt_result | to_json }}"
        dest: "{{ kt_out }}"
        mode: "0600"
      check_mode: false
      diff: false
"""


class Lab:
    """The broker, a scratch directory and helpers to run the module and the CLIs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = "kt-" + uuid.uuid4().hex[:8] + "-"
        self.playbook = tmp / "run.yml"
        self.playbook.write_text(PLAYBOOK)
        (tmp / "ansible.cfg").write_text("[defaults]\nlibrary = %s\nmodule_utils = %s\ninterpreter_python = auto_silent\n"
                                         "localhost_warning = false\n"
                                         % (ROLE / "library", ROLE.parent.parent / "plugins" / "module_utils"))
        self.runs = 0

    def name(self, short: str) -> str:
        return self.prefix + short

    def module(self, topics: list[dict[str, Any]], *flags: str) -> dict[str, Any]:
        """Run the module through ansible-playbook; return its registered result (with diff when asked)."""
        self.runs += 1
        out = self.tmp / ("result-%d.json" % self.runs)
        extra = self.tmp / ("vars-%d.json" % self.runs)
        extra.write_text(json.dumps({"kt_bootstrap": BOOTSTRAP, "kt_bin": KAFKA_BIN, "kt_topics": topics,
                                     "kt_out": str(out),
                                     # The module runs with the interpreter running the tests (has no deps).
                                     "ansible_python_interpreter": sys.executable}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        proc = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-c", "local", str(self.playbook), "-e", "@%s" % extra, *flags],
            cwd=self.tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert out.exists(), "playbook did not run:\n%s\n%s" % (proc.stdout, proc.stderr)
        return json.loads(out.read_text())

    def cli(self, tool: str, *args: str) -> str:
        proc = subprocess.run([str(Path(KAFKA_BIN) / tool), "--bootstrap-server", BOOTSTRAP, *args],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def partitions(self, topic: str) -> int | None:
        """PartitionCount of the topic as kafka-topics prints it (None when absent)."""
        for line in self.cli("kafka-topics", "--describe", "--topic", topic, "--if-exists").splitlines():
            if line.startswith("Topic: %s\t" % topic):
                return int(line.split("PartitionCount:")[1].split()[0])
        return None

    def overrides(self, topic: str) -> dict[str, str]:
        """The topic's dynamic configs as kafka-configs prints them (key=value before ' sensitive=')."""
        out = self.cli("kafka-configs", "--describe", "--entity-type", "topics", "--entity-name", topic)
        result = {}
        for line in out.splitlines():
            if line.startswith("  ") and " sensitive=" in line:
                key, value = line.strip().split(" sensitive=")[0].split("=", 1)
                result[key] = value
        return result


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    host, _, port = BOOTSTRAP.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        pytest.fail("KRAFTWERK_TEST_BOOTSTRAP=%s is set but not reachable: %s" % (BOOTSTRAP, exc))
    for tool in ("kafka-topics", "kafka-configs"):
        if not os.access(Path(KAFKA_BIN) / tool, os.X_OK):
            pytest.fail("KRAFTWERK_TEST_KAFKA_BIN=%s has no executable %s" % (KAFKA_BIN, tool))
    if shutil.which("ansible-playbook") is None:
        pytest.fail("ansible-playbook is not on PATH")
    the_lab = Lab(tmp_path_factory.mktemp("kafka_topic"))
    yield the_lab
    subprocess.run([str(Path(KAFKA_BIN) / "kafka-topics"), "--bootstrap-server", BOOTSTRAP, "--delete",
                    "--topic", the_lab.prefix + ".*", "--if-exists"],
                   capture_output=True, timeout=120, check=False)


def declared(lab: Lab, a_partitions: int = 3, a_configs: dict[str, Any] | None = None,
             b_configs: dict[str, Any] | None = None, a_rf: int = 1) -> list[dict[str, Any]]:
    return [
        {"name": lab.name("orders"), "partitions": a_partitions, "replication_factor": a_rf,
         "configs": a_configs if a_configs is not None else
         {"min.insync.replicas": 1, "retention.ms": 3600000, "cleanup.policy": "compact,delete"}},
        {"name": lab.name("orders.dlq"), "partitions": 1, "replication_factor": 1,
         "configs": b_configs if b_configs is not None else {}},
    ]


# The tests share one broker state and run in file order: each builds on the previous one.

def test_create(lab: Lab) -> None:
    res = lab.module(declared(lab))
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert [t["action"] for t in res["topics"]] == ["create", "create"]
    assert lab.partitions(lab.name("orders")) == 3
    assert lab.partitions(lab.name("orders.dlq")) == 1
    assert lab.overrides(lab.name("orders")) == {"min.insync.replicas": "1", "retention.ms": "3600000",
                                                 "cleanup.policy": "compact,delete"}
    assert lab.overrides(lab.name("orders.dlq")) == {}


def test_rerun_changes_nothing(lab: Lab) -> None:
    started = time.monotonic()
    res = lab.module(declared(lab))
    elapsed = time.monotonic() - started
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert res["commands"] == []
    assert [t["action"] for t in res["topics"]] == ["none", "none"]
    print("no-change run took %.1f s (ansible-playbook included)" % elapsed)


def test_check_mode_reports_and_changes_nothing(lab: Lab) -> None:
    topics = declared(lab, a_partitions=5, a_configs={"min.insync.replicas": 1, "retention.ms": 7200000,
                                                      "cleanup.policy": "compact,delete"})
    res = lab.module(topics, "--check", "--diff")
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert res["commands"] == []
    orders = res["topics"][0]
    assert orders["action"] == "update"
    assert orders["changes"] == ["partitions 3 -> 5", "config retention.ms: 3600000 -> 7200000"]
    assert len(res["diff"]) == 1
    assert res["diff"][0]["before"]["partitions"] == 3 and res["diff"][0]["after"]["partitions"] == 5
    assert res["diff"][0]["before"]["configs"]["retention.ms"] == "3600000"
    assert res["diff"][0]["after"]["configs"]["retention.ms"] == "7200000"
    assert lab.partitions(lab.name("orders")) == 3
    assert lab.overrides(lab.name("orders"))["retention.ms"] == "3600000"


def test_grow_partitions(lab: Lab) -> None:
    res = lab.module(declared(lab, a_partitions=5))
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert res["topics"][0]["changes"] == ["partitions 3 -> 5"]
    assert res["topics"][1]["action"] == "none"
    assert len(res["commands"]) == 1 and "--partitions" in res["commands"][0]
    assert lab.partitions(lab.name("orders")) == 5
    assert lab.module(declared(lab, a_partitions=5))["changed"] is False


def test_alter_configs(lab: Lab) -> None:
    a_configs = {"min.insync.replicas": 1, "retention.ms": 7200000, "cleanup.policy": "delete,compact"}
    b_configs = {"retention.ms": 1209600000, "segment.bytes": 104857600}
    res = lab.module(declared(lab, a_partitions=5, a_configs=a_configs, b_configs=b_configs))
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert [t["action"] for t in res["topics"]] == ["update", "update"]
    assert lab.overrides(lab.name("orders")) == {"min.insync.replicas": "1", "retention.ms": "7200000",
                                                 "cleanup.policy": "delete,compact"}
    assert lab.overrides(lab.name("orders.dlq")) == {"retention.ms": "1209600000", "segment.bytes": "104857600"}
    again = lab.module(declared(lab, a_partitions=5, a_configs=a_configs, b_configs=b_configs))
    assert again["changed"] is False, again
    # Undeclared keys are left alone: dropping retention.ms from the declaration changes nothing.
    fewer = lab.module(declared(lab, a_partitions=5, a_configs={"min.insync.replicas": 1}, b_configs=b_configs))
    assert fewer["changed"] is False, fewer
    assert lab.overrides(lab.name("orders"))["retention.ms"] == "7200000"


def test_shrink_is_refused_and_nothing_changes(lab: Lab) -> None:
    topics = declared(lab, a_partitions=2, b_configs={"retention.ms": 1})
    topics.append({"name": lab.name("new"), "partitions": 1, "replication_factor": 1, "configs": {}})
    res = lab.module(topics)
    assert res.get("failed") is True
    assert res["changed"] is False
    assert ("topic %s has 5 partitions, declared 2: Kafka cannot shrink partitions; "
            % lab.name("orders")) in res["msg"]
    assert "No topic was changed" in res["msg"]
    assert res["commands"] == []
    assert lab.partitions(lab.name("orders")) == 5
    assert lab.overrides(lab.name("orders.dlq"))["retention.ms"] == "1209600000"
    assert lab.partitions(lab.name("new")) is None


def test_replication_change_is_refused_and_nothing_changes(lab: Lab) -> None:
    topics = declared(lab, a_partitions=6, a_rf=3)
    topics.append({"name": lab.name("new"), "partitions": 1, "replication_factor": 1, "configs": {}})
    res = lab.module(topics)
    assert res.get("failed") is True
    assert res["changed"] is False
    assert ("topic %s has replication factor 1, declared 3: changing the replication factor needs a partition "
            "reassignment" % lab.name("orders")) in res["msg"]
    assert lab.partitions(lab.name("orders")) == 5
    assert lab.partitions(lab.name("new")) is None


def test_bad_declaration_is_refused_before_any_call(lab: Lab) -> None:
    res = lab.module([{"name": "bad name", "partitions": 1, "replication_factor": 1},
                      {"name": lab.name("x"), "partitions": 0, "replication_factor": 1}])
    assert res.get("failed") is True
    assert "not legal for Kafka" in res["msg"] and "partitions must be at least 1" in res["msg"]
    assert lab.partitions(lab.name("x")) is None


def test_kafka_error_is_reported_clearly(lab: Lab) -> None:
    res = lab.module([{"name": lab.name("typo"), "partitions": 1, "replication_factor": 1,
                       "configs": {"retention.mss": 1}}])
    assert res.get("failed") is True
    assert res["changed"] is False
    assert "Unknown topic config name: retention.mss" in res["msg"]
    assert "Already applied: nothing" in res["msg"]
