"""The JMX exporter in the kafka role's templates, rendered by Ansible with the role's defaults: no host is touched.

One playbook run (jmx_exporter_render.py) over five made-up Kafka hosts, each with its own variables:
  k-default  the defaults: the unit loads the agent on the host's ansible_host, port 7071
  k-off      kafka_jmx_exporter_enabled: false: no agent in the unit
  k-custom   another address and port, one request type, an extra MBean and rule
  k-any      kafka_jmx_exporter_bind_address: 0.0.0.0, refused by validation
  k-clash    kafka_jmx_exporter_port on a listener's port, refused by validation
  k-bad, k-bad-rule  a bad sha256, version, request type, extra ObjectName and extra rules, each refused by name
Then the rules themselves, applied the way the exporter applies them (each pattern wrapped in ^.*(?: ... ).*$, names
lowercased) to the strings it builds from the MBeans of Kafka 3.9.1 (seen on a real node): each gives the name that
docs/monitoring-contract.md lists. test_jmx_exporter_real.py checks the same against a running Kafka.
Run: .venv/bin/pytest -q roles/kafka/tests/test_jmx_exporter.py (about 20 s, most of it ansible-playbook).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("jmx_exporter_render", HERE / "jmx_exporter_render.py")
assert _spec is not None and _spec.loader is not None
jr = importlib.util.module_from_spec(_spec)
sys.modules["jmx_exporter_render"] = jr
_spec.loader.exec_module(jr)

DEFAULTS = yaml.safe_load((jr.ROLE / "defaults" / "main.yml").read_text())
JAR = "/opt/kafka/jmx_exporter/jmx_prometheus_javaagent-1.0.1.jar"
# The agent's own parsing of its argument (JavaAgent.class of jmx_prometheus_javaagent 1.0.1).
AGENT_ARG_RE = re.compile(r"^(?:((?:[\w.-]+)|(?:\[.+])):)?(\d{1,5}):(.+)")
EXTRA_RULE = {"pattern": "kafka.server<type=ReplicaManager, name=(OfflineReplicaCount)><>Value",
              "name": "kafka_server_replicamanager_$1", "type": "GAUGE"}
HOSTS: dict[str, dict[str, Any]] = {
    "k-default": {"ansible_host": "192.0.2.11"},
    "k-off": {"ansible_host": "192.0.2.12", "kafka_jmx_exporter_enabled": False},
    "k-custom": {"ansible_host": "192.0.2.13", "kafka_jmx_exporter_bind_address": "10.9.8.7",
                 "kafka_jmx_exporter_port": 7072, "kafka_jmx_exporter_request_types": ["Produce"],
                 "kafka_jmx_exporter_extra_object_names": ["kafka.server:type=ReplicaManager,name=OfflineReplicaCount"],
                 "kafka_jmx_exporter_extra_rules": [EXTRA_RULE]},
    "k-any": {"ansible_host": "192.0.2.14", "kafka_jmx_exporter_bind_address": "0.0.0.0"},
    "k-clash": {"ansible_host": "192.0.2.15", "kafka_jmx_exporter_port": 9095},
    "k-bad": {"ansible_host": "192.0.2.16", "kafka_jmx_exporter_sha256": "7D61F737",
              "kafka_jmx_exporter_version": "v1 0",
              "kafka_jmx_exporter_request_types": ["Produce", "Fetch; rm"],
              "kafka_jmx_exporter_extra_object_names": ["no-domain-here"],
              "kafka_jmx_exporter_extra_rules": [{"pattern": "x", "nmae": "typo"}]},
    "k-bad-rule": {"ansible_host": "192.0.2.17", "kafka_jmx_exporter_extra_rules": [{"name": "no_pattern"}]},
}


# One worker runs the whole file under pytest-xdist (./kw unit: --dist loadgroup): the render fixtures run once.
pytestmark = pytest.mark.xdist_group("jmx-render")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Any:
    result = jr.render(tmp_path_factory.mktemp("jmx"), HOSTS)
    # k-any, k-clash and k-bad* fail validation (rc 2); the other hosts carry on.
    assert result.returncode in (0, 2), result.output[-6000:]
    return result


def javaagents(exec_start: str) -> list[str]:
    return [w for w in exec_start.split() if w.startswith("-javaagent:")]


def test_defaults_are_the_contract() -> None:
    assert DEFAULTS["kafka_jmx_exporter_enabled"] is True
    assert DEFAULTS["kafka_jmx_exporter_version"] == "1.0.1"
    assert DEFAULTS["kafka_jmx_exporter_sha256"] == "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1"
    assert DEFAULTS["kafka_jmx_exporter_port"] == 7071
    assert "0.0.0.0" not in DEFAULTS["kafka_jmx_exporter_bind_address"]
    assert DEFAULTS["kafka_jmx_exporter_bind_address"] == "{{ ansible_host | default(inventory_hostname) }}"
    assert DEFAULTS["kafka_jmx_exporter_url"].startswith("{{ kafka_maven_repository_url")
    assert DEFAULTS["kafka_jmx_exporter_url"].endswith(
        "/io/prometheus/jmx/jmx_prometheus_javaagent/{{ kafka_jmx_exporter_version }}"
        "/jmx_prometheus_javaagent-{{ kafka_jmx_exporter_version }}.jar")


def test_unit_loads_the_agent_on_the_hosts_address(rendered: Any) -> None:
    exec_start = rendered.exec_start("k-default")
    assert javaagents(exec_start) == [f"-javaagent:{JAR}=192.0.2.11:7071:/etc/kafka/jmx-exporter.yml"]
    # A JVM option: before the main class, never an argument of kafka.Kafka.
    assert exec_start.index("-javaagent:") < exec_start.index(" kafka.Kafka ")
    arg = javaagents(exec_start)[0].split("=", 1)[1]
    match = AGENT_ARG_RE.match(arg)
    assert match and match.groups() == ("192.0.2.11", "7071", "/etc/kafka/jmx-exporter.yml")
    unit = rendered.file("k-default", "kafka.service")
    # Remote JMX stays closed, and nothing binds every interface.
    for closed in ("jmxremote", "JMX_PORT", "0.0.0.0"):
        assert closed not in unit


def test_unit_has_no_agent_when_disabled(rendered: Any) -> None:
    exec_start = rendered.exec_start("k-off")
    assert "javaagent" not in rendered.file("k-off", "kafka.service")
    assert "jmx" not in exec_start
    # The rest of the command line is the same as with the agent.
    with_agent = rendered.exec_start("k-default").replace(
        f" -javaagent:{JAR}=192.0.2.11:7071:/etc/kafka/jmx-exporter.yml", "")
    assert exec_start == with_agent


def test_unit_follows_address_and_port(rendered: Any) -> None:
    assert javaagents(rendered.exec_start("k-custom")) == [
        f"-javaagent:{JAR}=10.9.8.7:7072:/etc/kafka/jmx-exporter.yml"]


def test_config_reads_only_the_listed_mbeans(rendered: Any) -> None:
    config = yaml.safe_load(rendered.file("k-default", "jmx-exporter.yml"))
    assert config["lowercaseOutputName"] is True and config["lowercaseOutputLabelNames"] is True
    assert not {"hostPort", "jmxUrl", "whitelistObjectNames"} & set(config)
    names = config["includeObjectNames"]
    assert len(names) == len(set(names))
    for request in DEFAULTS["kafka_jmx_exporter_request_types"]:
        assert f"kafka.network:type=RequestMetrics,name=RequestsPerSec,request={request},*" in names
        assert f"kafka.network:type=RequestMetrics,name=TotalTimeMs,request={request}" in names
    # Nothing broad: no whole domain, no whole RequestMetrics.
    assert not [n for n in names if n.endswith(":*") or n == "kafka.network:type=RequestMetrics,*"]
    assert all(set(rule) <= {"pattern", "name", "type", "labels"} and rule["type"] in ("GAUGE", "COUNTER")
               for rule in config["rules"])


def test_config_takes_the_extras_first(rendered: Any) -> None:
    config = yaml.safe_load(rendered.file("k-custom", "jmx-exporter.yml"))
    assert config["rules"][0] == EXTRA_RULE
    assert "kafka.server:type=ReplicaManager,name=OfflineReplicaCount" in config["includeObjectNames"]
    requests = [n for n in config["includeObjectNames"] if "RequestMetrics" in n]
    assert requests == ["kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,*",
                        "kafka.network:type=RequestMetrics,name=TotalTimeMs,request=Produce"]
    # Same rules as the default after the extra one.
    default = yaml.safe_load(rendered.file("k-default", "jmx-exporter.yml"))
    assert config["rules"][1:] == default["rules"]


def test_validation_refuses_every_interface_and_a_listener_port(rendered: Any) -> None:
    out = " ".join(rendered.output.split())
    assert "fatal: [k-any]" in rendered.output
    assert 'kafka_jmx_exporter_bind_address must be a host name or IPv4 address of k-any' in out
    assert 'not 0.0.0.0' in out
    assert "fatal: [k-clash]" in rendered.output
    assert "kafka_jmx_exporter_port 9095 is also the port of a listener" in out
    for expected in ("kafka_jmx_exporter_version must be a version",
                     "kafka_jmx_exporter_sha256 must be the 64-hex-digit",
                     "kafka_jmx_exporter_request_types must be a list of Kafka request names",
                     "kafka_jmx_exporter_extra_object_names must be a list of JMX ObjectName patterns",
                     "kafka_jmx_exporter_extra_rules[0] must be a rule with only the keys",
                     "kafka_jmx_exporter_extra_rules[0] has a name but no pattern"):
        assert expected in out, expected
    assert "fatal: [k-bad]" in rendered.output and "fatal: [k-bad-rule]" in rendered.output
    for host in ("k-any", "k-clash", "k-bad", "k-bad-rule"):
        assert not (rendered.out / host).exists()
    for host in ("k-default", "k-off", "k-custom"):
        assert f"fatal: [{host}]" not in rendered.output


def test_published_metrics_targets(rendered: Any) -> None:
    targets = json.loads(rendered.file("k-default", "metrics-targets.json"))
    assert targets["k-default"] == "192.0.2.11:7071"
    assert targets["k-custom"] == "10.9.8.7:7072"
    assert "k-off" not in targets


# --- The rules, applied as the exporter applies them -------------------------------------------------------------

# "<domain><keys><>attribute: value", as JmxCollector builds it, from MBeans a Kafka 3.9.1 combined node has.
SAMPLES: list[tuple[str, str, dict[str, str]]] = [
    ("kafka.server<type=ReplicaManager, name=UnderReplicatedPartitions><>Value: 0.0",
     "kafka_server_replicamanager_underreplicatedpartitions", {}),
    ("kafka.server<type=ReplicaManager, name=UnderMinIsrPartitionCount><>Value: 0.0",
     "kafka_server_replicamanager_underminisrpartitioncount", {}),
    ("kafka.server<type=ReplicaManager, name=PartitionCount><>Value: 2.0",
     "kafka_server_replicamanager_partitioncount", {}),
    ("kafka.server<type=ReplicaManager, name=LeaderCount><>Value: 2.0", "kafka_server_replicamanager_leadercount", {}),
    ("kafka.server<type=ReplicaManager, name=IsrShrinksPerSec><>Count: 0.0",
     "kafka_server_replicamanager_isrshrinks_total", {}),
    ("kafka.server<type=ReplicaManager, name=IsrExpandsPerSec><>Count: 0.0",
     "kafka_server_replicamanager_isrexpands_total", {}),
    ("kafka.controller<type=KafkaController, name=ActiveControllerCount><>Value: 1.0",
     "kafka_controller_kafkacontroller_activecontrollercount", {}),
    ("kafka.controller<type=KafkaController, name=OfflinePartitionsCount><>Value: 0.0",
     "kafka_controller_kafkacontroller_offlinepartitionscount", {}),
    ("kafka.controller<type=KafkaController, name=GlobalPartitionCount><>Value: 2.0",
     "kafka_controller_kafkacontroller_globalpartitioncount", {}),
    ("kafka.controller<type=KafkaController, name=LastAppliedRecordLagMs><>Value: 87.0",
     "kafka_controller_kafkacontroller_lastappliedrecordlagms", {}),
    ("kafka.server<type=raft-metrics><>current-leader: 1.0", "kafka_raft_current_leader", {}),
    ("kafka.server<type=raft-metrics><>current-epoch: 1.0", "kafka_raft_current_epoch", {}),
    ("kafka.server<type=raft-metrics><>high-watermark: 32.0", "kafka_raft_high_watermark", {}),
    ("kafka.server<type=raft-metrics><>log-end-offset: 32.0", "kafka_raft_log_end_offset", {}),
    ("kafka.server<type=raft-metrics><>commit-latency-avg: 0.0", "kafka_raft_commit_latency_avg_ms", {}),
    ("kafka.server<type=broker-metadata-metrics><>last-applied-record-lag-ms: 87.0",
     "kafka_server_broker_metadata_last_applied_record_lag_ms", {}),
    ("kafka.network<type=RequestMetrics, name=RequestsPerSec, request=Produce, version=11><>Count: 1.0",
     "kafka_network_requestmetrics_requests_total", {"request": "Produce", "version": "11"}),
    ("kafka.network<type=RequestMetrics, name=TotalTimeMs, request=Produce><>50thPercentile: 3.0",
     "kafka_network_requestmetrics_totaltimems", {"request": "Produce", "quantile": "0.50"}),
    ("kafka.network<type=RequestMetrics, name=TotalTimeMs, request=FetchConsumer><>99thPercentile: 501.0",
     "kafka_network_requestmetrics_totaltimems", {"request": "FetchConsumer", "quantile": "0.99"}),
    ("kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec, topic=orders.v1-eu><>Count: 87.0",
     "kafka_server_brokertopicmetrics_bytesin_total", {"topic": "orders.v1-eu"}),
    ("kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec><>Count: 87.0",
     "kafka_server_brokertopicmetrics_bytesin_total", {}),
    ("kafka.server<type=BrokerTopicMetrics, name=BytesOutPerSec><>Count: 0.0",
     "kafka_server_brokertopicmetrics_bytesout_total", {}),
    ("kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec, topic=t><>Count: 3.0",
     "kafka_server_brokertopicmetrics_messagesin_total", {"topic": "t"}),
    ("kafka.server<type=BrokerTopicMetrics, name=FailedProduceRequestsPerSec, topic=t><>Count: 1.0",
     "kafka_server_brokertopicmetrics_failedproducerequests_total", {"topic": "t"}),
    ("kafka.server<type=BrokerTopicMetrics, name=FailedFetchRequestsPerSec><>Count: 0.0",
     "kafka_server_brokertopicmetrics_failedfetchrequests_total", {}),
]
# Attributes of the same MBeans that stay out (each would be a series nobody reads).
NOT_EXPORTED = [
    "kafka.server<type=ReplicaManager, name=IsrShrinksPerSec><>OneMinuteRate: 0.0",
    "kafka.network<type=RequestMetrics, name=TotalTimeMs, request=Produce><>999thPercentile: 9.0",
    "kafka.network<type=RequestMetrics, name=TotalTimeMs, request=Produce><>95thPercentile: 9.0",
    "kafka.network<type=RequestMetrics, name=TotalTimeMs, request=Produce><>Count: 9.0",
    "kafka.server<type=BrokerTopicMetrics, name=TotalProduceRequestsPerSec, topic=t><>Count: 1.0",
    "kafka.server<type=raft-metrics><>commit-latency-max: 1.0",
    "kafka.server<type=raft-metrics><>current-vote: 1.0",
    "kafka.controller<type=KafkaController, name=GlobalTopicCount><>Value: 1.0",
]


def apply_rules(rules: list[dict[str, Any]], sample: str) -> tuple[str, dict[str, str]] | None:
    """The first rule whose pattern matches: its name (lowercased) and labels, with $n filled in."""
    for rule in rules:
        match = re.match(r"^.*(?:" + rule["pattern"] + r").*$", sample)
        if match:
            def fill(text: str, m: re.Match[str] = match) -> str:
                return re.sub(r"\$(\d+)", lambda g: m.group(int(g.group(1))), text)
            return fill(rule["name"]).lower(), {k.lower(): fill(v) for k, v in rule.get("labels", {}).items()}
    return None


def test_rules_give_the_contract_names(rendered: Any) -> None:
    rules = yaml.safe_load(rendered.file("k-default", "jmx-exporter.yml"))["rules"]
    for sample, name, labels in SAMPLES:
        assert apply_rules(rules, sample) == (name, labels), sample
    for sample in NOT_EXPORTED:
        assert apply_rules(rules, sample) is None, sample
