"""The cluster Molecule converged: 3 KRaft nodes under systemd, the declared topics, real data."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from conftest import ADMIN_CONFIG, address, converge, host, hosts_of

KAFKA = hosts_of("kafka")


@pytest.mark.parametrize("name", KAFKA)
def test_unit_active_and_enabled(name: str) -> None:
    svc = host(name).service("kafka")
    assert svc.is_running
    assert svc.is_enabled


@pytest.mark.parametrize("name", KAFKA)
def test_ports_listening(name: str) -> None:
    ip = address(name)
    listening = host(name).check_output("ss -Htln")
    # The JVM listens on an IPv6 socket: the address shows as [::ffff:10.213.x.y].
    for port in (9094, 9095, 9096):
        assert re.search(rf"(^|[\s\[:]){re.escape(ip)}\]?:{port}\s", listening, re.M), listening


@pytest.mark.parametrize("name", KAFKA)
def test_runs_as_kafka_with_our_jvm_settings(name: str) -> None:
    h = host(name)
    unit = h.file("/etc/systemd/system/kafka.service").content_string
    assert "User=kafka" in unit and "LimitNOFILE=" in unit and "TimeoutStopSec=" in unit
    java = h.process.get(comm="java", user="kafka")
    assert "kafka.Kafka" in java.args and "-XX:+UseG1GC" in java.args
    assert h.file("/opt/kafka/current").linked_to == "/opt/kafka/3.9.1"


def test_quorum_has_three_voters_and_a_leader(kafka1: Any, bootstrap: str) -> None:
    out = kafka1.check_output(f"kafka-metadata-quorum --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} describe --status")
    leader = int(re.search(r"LeaderId:\s+(-?\d+)", out).group(1))  # type: ignore[union-attr]
    voters = json.loads(re.search(r"CurrentVoters:\s+(\[.*\])", out).group(1))  # type: ignore[union-attr]
    assert sorted(v["id"] for v in voters) == [1, 2, 3]
    assert leader in (1, 2, 3)


def meta(name: str) -> dict[str, str]:
    text = host(name).file("/var/lib/kafka/data/meta.properties").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_cluster_id_is_the_same_everywhere_and_kept_on_the_controller() -> None:
    ids = {meta(name)["cluster.id"] for name in KAFKA}
    assert len(ids) == 1, ids
    node_ids = sorted(int(meta(name)["node.id"]) for name in KAFKA)
    assert node_ids == [1, 2, 3]


def describe_topic(kafka1: Any, bootstrap: str, topic: str) -> list[dict[str, str]]:
    out = kafka1.check_output(f"kafka-topics --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --describe --topic {topic}")
    rows = []
    for line in out.splitlines():
        if "Partition:" in line and "Leader:" in line:
            fields = dict(re.findall(r"(\w+):\s*(\S*)", line))
            rows.append(fields)
    return rows


@pytest.mark.parametrize("topic", ["test-topic", "test-topic.dlq"])
def test_declared_topics(kafka1: Any, bootstrap: str, topic: str) -> None:
    rows = describe_topic(kafka1, bootstrap, topic)
    assert len(rows) == 6
    for row in rows:
        replicas = row["Replicas"].split(",")
        assert len(replicas) == 3
        assert sorted(row["Isr"].split(",")) == sorted(replicas), row
    configs = kafka1.check_output(
        f"kafka-configs --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --entity-type topics --entity-name {topic} --describe")
    assert "min.insync.replicas=2" in configs


def test_round_trip_10000_messages_acks_all_in_order(kafka1: Any, bootstrap: str) -> None:
    """10,000 keyed messages produced with acks=all come back complete, and in order per partition."""
    topic = "kraftwerk-roundtrip"
    kafka1.run(f"kafka-topics --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --delete --topic {topic}")
    kafka1.check_output(
        f"kafka-topics --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --create --topic {topic} --partitions 6 "
        f"--replication-factor 3 --config min.insync.replicas=2")
    n = 10_000
    produce = kafka1.run(
        f"seq 0 {n - 1} | awk '{{print \"k\" ($1 % 24) \":\" $1}}' | "
        f"kafka-console-producer --bootstrap-server {bootstrap} --producer.config {ADMIN_CONFIG} --topic {topic} "
        f"--producer-property acks=all --producer-property enable.idempotence=true "
        f"--property parse.key=true --property key.separator=:")
    assert produce.rc == 0, produce.stderr
    consume = kafka1.run(
        f"kafka-console-consumer --bootstrap-server {bootstrap} --consumer.config {ADMIN_CONFIG} --topic {topic} --from-beginning "
        f"--max-messages {n} --timeout-ms 60000 --property print.partition=true --property print.key=true "
        f"--property key.separator=: --group kraftwerk-roundtrip-check")
    assert consume.rc == 0, consume.stderr
    seen: dict[int, list[int]] = {}
    key_partition: dict[str, int] = {}
    for line in consume.stdout.splitlines():
        m = re.match(r"Partition:(\d+)[:\s](k\d+):(\d+)$", line)
        assert m, f"unexpected line {line!r}"
        part, key, value = int(m.group(1)), m.group(2), int(m.group(3))
        seen.setdefault(part, []).append(value)
        assert key_partition.setdefault(key, part) == part, f"key {key} on two partitions"
    values = [v for vs in seen.values() for v in vs]
    assert sorted(values) == list(range(n)), f"{len(values)} of {n} messages came back"
    for part, vs in seen.items():
        assert vs == sorted(vs), f"partition {part} out of order"
    assert len(seen) > 1


def data_fingerprint(name: str) -> str:
    """meta.properties and the round-trip topic's segments on this host."""
    h = host(name)
    listing = h.check_output(
        "cd /var/lib/kafka/data && sha256sum meta.properties && "
        "for d in kraftwerk-roundtrip-[0-9]; do sha256sum $d/*.log; done | sort")
    return hashlib.sha256(listing.encode()).hexdigest()


def test_converge_after_data_exists_changes_nothing(kafka1: Any, bootstrap: str) -> None:
    before = {name: data_fingerprint(name) for name in KAFKA}
    ids_before = {name: meta(name) for name in KAFKA}
    res = converge()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    recap = re.findall(r"changed=(\d+)", res.stdout)
    assert recap and all(c == "0" for c in recap), res.stdout[-3000:]
    assert {name: meta(name) for name in KAFKA} == ids_before
    assert {name: data_fingerprint(name) for name in KAFKA} == before


def test_a_foreign_cluster_id_stops_the_play_and_loses_nothing(kafka1: Any, bootstrap: str) -> None:
    """A host formatted for another cluster (here: the controller claims another id) fails closed."""
    before = {name: data_fingerprint(name) for name in KAFKA}
    res = converge("-e", "kafka_cluster_id=MkU3OEVBNTcwNTJENDM2Qg")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Refusing to go on: nothing was reformatted" in out, out[-3000:]
    assert {name: data_fingerprint(name) for name in KAFKA} == before
    for name in KAFKA:
        assert host(name).service("kafka").is_running


def test_check_mode_with_a_pending_change_reports_the_restarts_and_waits_on_no_gate() -> None:
    """`site.yml --check --diff` with a pending server.properties change ends, shows it, changes nothing."""
    pids = {name: host(name).check_output("systemctl show -p MainPID --value kafka") for name in KAFKA}
    props = {name: host(name).file("/etc/kafka/server.properties").content_string for name in KAFKA}
    res = converge("--check", "--diff", "-e", '{"kafka_num_network_threads": 4}')
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "+num.network.threads=4" in out and "-num.network.threads=3" in out, out[-4000:]
    assert re.search(r"Would restart Kafka on (kafka\d, ){2}kafka\d \(one node at a time", out), out[-4000:]
    assert "TASK [kafka : Gate - restarting keeps" not in out and "TASK [kafka : Restart Kafka on" not in out
    assert {name: host(name).file("/etc/kafka/server.properties").content_string for name in KAFKA} == props
    assert {name: host(name).check_output("systemctl show -p MainPID --value kafka") for name in KAFKA} == pids


UNITS = [(name, "kafka.service") for name in KAFKA] + [
    (hosts_of("producer")[0], "kraftwerk-producer@8100.service"),
    (hosts_of("consumer")[0], "kraftwerk-consumer@8200.service"),
    (hosts_of("nginx")[0], "nginx.service"),
]


def exposure(name: str, unit: str) -> float:
    out = host(name).check_output(f"systemd-analyze security --no-pager {unit}")
    return float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))  # type: ignore[union-attr]


def test_units_are_hardened_and_their_exposure_is_recorded() -> None:
    """`systemd-analyze security` per unit (0 = fully sandboxed, 10 = nothing): written for the docs."""
    import os
    import tempfile
    from pathlib import Path

    scores = {f"{name}:{unit}": exposure(name, unit) for name, unit in UNITS}
    out = Path(os.environ.get("KRAFTWERK_RESULTS_DIR", tempfile.gettempdir())) / "unit-exposure.json"
    out.write_text(json.dumps(scores, indent=2) + "\n")
    print(json.dumps(scores, indent=2))  # noqa: T201 - the numbers the closing note quotes
    # Measured 2.9 for Kafka (the JVM keeps MemoryDenyWriteExecute and SystemCallFilter off) and 1.2 for the
    # apps. Debian's nginx.service is not ours to harden (it starts as root and drops privileges).
    for key, score in scores.items():
        if "kafka.service" in key:
            assert score <= 3.0, scores
        elif "nginx" not in key:
            assert score <= 1.5, scores


# About 200 s (three restarts behind the gates): under ./kw test --all only. The rolling restart itself is proven under
# load by test_data_path.py in every ./kw test; this adds the reissue of the certificates and the files' modes.
@pytest.mark.long
def test_certificate_renewal_rolls_one_node_at_a_time_through_the_gates(kafka1: Any) -> None:
    """A certificate due for renewal is reissued by a re-run, and the nodes restart one by one behind the gates.

    kafka_tls_renew_before_days above the 90-day lifetime makes every node certificate due now.
    """
    import subprocess

    from conftest import INVENTORY_DIR

    def serial(name: str) -> str:
        return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(INVENTORY_DIR / "pki" / f"kafka-{name}.crt")],
                              capture_output=True, text=True, check=True).stdout.strip()

    before = {name: serial(name) for name in KAFKA}
    res = converge("-e", "kafka_tls_renew_before_days=100")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    after = {name: serial(name) for name in KAFKA}
    assert all(before[n] != after[n] for n in KAFKA), (before, after)
    # One node at a time: each restart sits between its own before- and after-gate.
    steps = re.findall(r"(?:TASK|RUNNING HANDLER) \[kafka : (Gate - restarting keeps|Restart Kafka on|Gate - back in the ISR)[^\]]*\]", res.stdout)
    assert steps == ["Gate - restarting keeps", "Restart Kafka on", "Gate - back in the ISR"] * 3, steps
    for name in KAFKA:
        installed = host(name).file("/etc/kafka/tls/node.pem")
        assert installed.user == "root" and installed.group == "kafka" and installed.mode == 0o640
        cert = (INVENTORY_DIR / "pki" / f"kafka-{name}.crt").read_text().strip()
        assert cert.split("-----BEGIN CERTIFICATE-----")[1][:200] in installed.content_string


def test_a_heap_that_does_not_fit_the_host_is_refused_before_any_change() -> None:
    unit_before = {name: host(name).file("/etc/systemd/system/kafka.service").content_string for name in KAFKA}
    res = converge("-e", "kafka_heap_opts='-Xms100000g -Xmx100000g'")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "does not fit" in " ".join(out.split()), out[-3000:]
    for name in KAFKA:
        assert host(name).file("/etc/systemd/system/kafka.service").content_string == unit_before[name]
        assert host(name).service("kafka").is_running
