"""The kafka role's JMX exporter on a real Kafka 3.9.1 KRaft node: the names of docs/monitoring-contract.md, no mock.

1. Ansible renders the role's own kafka.service.j2 and jmx-exporter.yml.j2 with the role's defaults (one host,
   ansible_host 127.0.0.1, so the default bind address is 127.0.0.1; a free port) and runs the role's download of
   the agent jar (tasks/jmx_exporter_fetch.yml: get_url into ~/.cache/kraftwerk, sha256 verified; no network when
   the cached jar already matches).
2. One combined broker+controller starts on loopback from the pinned 3.9.1 jars (~/.cache/kraftwerk/kafka-3.9.1-maven,
   fetched by lab/fetch-kafka-maven.py when missing), with exactly the -javaagent option of the rendered unit.
3. A topic gets records, which are read back; a record without a key, refused by a compacted topic, makes the
   failed-produce meters count too.
4. /metrics is polled until every Kafka name of the contract is there (deadline, no fixed sleep); then: exactly the
   contract's Kafka names (nothing else from Kafka), the per-topic series with `topic` and the broker-wide ones
   without, the quantiles 0.50 and 0.99, plausible values, the JVM metrics, and fewer than MAX_SERIES series.
   The agent listens on 127.0.0.1 only: 127.0.0.2 (also loopback) is refused.

Needs java (skipped without it) and, the first time, Maven Central. About 40-70 s (one Kafka JVM and five CLI runs).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import yaml
from kafka_test_support import load_module, needs_java

HERE = Path(__file__).resolve().parent
ROLE = HERE.parent
REPO = ROLE.parent.parent
CONTRACT = REPO / "docs" / "monitoring-contract.md"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
# This single node with three topics (two of ours, __consumer_offsets) gives 167 series (63 kafka_*, the rest the
# agent's jvm_*, process_* and jmx_*); the bound leaves room for more request versions and topics, not for a whole
# MBean domain let in by mistake (that is thousands).
MAX_SERIES = 300

pytestmark = needs_java


ks = load_module("kraftwerk_kafka_server", REPO / "apps" / "tests" / "kafka_server.py")
jr = load_module("jmx_exporter_render", HERE / "jmx_exporter_render.py")

# The Kafka names of the contract ("Kafka metric names"). The broker metadata lag is the contract's "broker
# metadata lag if present"; test_contract_lists_these_names keeps this list and the document together.
GAUGES = [
    "kafka_server_replicamanager_underreplicatedpartitions",
    "kafka_server_replicamanager_underminisrpartitioncount",
    "kafka_server_replicamanager_partitioncount",
    "kafka_server_replicamanager_leadercount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "kafka_controller_kafkacontroller_globalpartitioncount",
    "kafka_controller_kafkacontroller_lastappliedrecordlagms",
    "kafka_server_broker_metadata_last_applied_record_lag_ms",
    "kafka_raft_current_leader",
    "kafka_raft_current_epoch",
    "kafka_raft_high_watermark",
    "kafka_raft_log_end_offset",
    "kafka_raft_commit_latency_avg_ms",
    "kafka_network_requestmetrics_totaltimems",
]
COUNTERS = [
    "kafka_server_replicamanager_isrshrinks_total",
    "kafka_server_replicamanager_isrexpands_total",
    "kafka_network_requestmetrics_requests_total",
]
TOPIC_COUNTERS = [f"kafka_server_brokertopicmetrics_{m}_total"
                  for m in ("bytesin", "bytesout", "messagesin", "failedproducerequests", "failedfetchrequests")]
KAFKA_NAMES = set(GAUGES + COUNTERS + TOPIC_COUNTERS)
TOPIC, FAILING_TOPIC, RECORDS = "jmx-orders", "jmx-compacted", 5


def test_contract_lists_these_names() -> None:
    text = CONTRACT.read_text()
    section = text.split("## Kafka metric names", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for token in re.findall(r"`([^`]+)`", section):
        name = token.split("{", 1)[0]
        if name.startswith("..._"):
            name = "kafka_server_brokertopicmetrics_" + name[4:]
        if name.startswith("kafka_"):
            listed.add(name)
    assert listed == KAFKA_NAMES


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def java() -> str:
    return os.environ.get("KRAFTWERK_TEST_JAVA") or shutil.which("java") or "java"


def cli(libs: Path, main_class: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", f"{libs}/*",
                           main_class, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False)


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Series:
    """The Prometheus text format: one sample per line, comments skipped."""
    series: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        series[(match.group(1), labels)] = float(match.group(3))
    return series


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (a loopback URL the test built)
        return parse(response.read().decode())


def names(series: Series) -> set[str]:
    return {name for name, _ in series}


def with_labels(series: Series, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(ls), v) for (n, ls), v in series.items()
            if n == name and all(dict(ls).get(k) == val for k, val in labels.items())]


def complete(series: Series) -> bool:
    """Every name, and the per-topic series the traffic of step 3 creates."""
    return (KAFKA_NAMES <= names(series)
            and all(with_labels(series, f"kafka_server_brokertopicmetrics_{m}_total", topic=TOPIC)
                    for m in ("bytesin", "bytesout", "messagesin"))
            and bool(with_labels(series, "kafka_server_brokertopicmetrics_failedproducerequests_total",
                                 topic=FAILING_TOPIC)))


def start_kafka(workdir: Path, libs: Path, ports: tuple[int, int], javaagent: str) -> subprocess.Popen[bytes]:
    port, cport = ports
    props = workdir / "server.properties"
    props.write_text(ks.SERVER_PROPERTIES.format(host="127.0.0.1", port=port, cport=cport, logdir=workdir / "data"))
    log4j = workdir / "log4j.properties"
    log4j.write_text(ks.LOG4J.format(logfile=workdir / "server.log"))
    # What `kafka-storage random-uuid` prints (16 random bytes, base64url without padding), without a JVM for it.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    formatted = cli(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    out = (workdir / "stdout.log").open("wb")
    return subprocess.Popen(
        [java(), "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true", javaagent,
         f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*", "kafka.Kafka", str(props)],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_contract_metrics_from_a_real_node(tmp_path: Path) -> None:
    port, cport, mport = free_ports(3)
    install_root, config_dir = tmp_path / "opt" / "kafka", tmp_path / "etc" / "kafka"

    # 1. The role's templates and download, through Ansible.
    rendered = jr.render(tmp_path / "render", {"kafka1": {
        "ansible_host": "127.0.0.1", "kafka_advertised_host": "kafka1.kraftwerk.invalid",
        "kafka_install_root": str(install_root), "kafka_config_dir": str(config_dir),
        "kafka_jmx_exporter_port": mport, "kafka_default_replication_factor": 1, "kafka_min_insync_replicas": 1,
        "kafka_offsets_topic_replication_factor": 1, "kafka_transaction_state_log_replication_factor": 1,
        "kafka_transaction_state_log_min_isr": 1}}, fetch=True)
    assert rendered.returncode == 0, rendered.output[-6000:]
    version = DEFAULTS["kafka_jmx_exporter_version"]
    cached = Path.home() / ".cache" / "kraftwerk" / f"jmx_prometheus_javaagent-{version}.jar"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == DEFAULTS["kafka_jmx_exporter_sha256"]
    agents = [w for w in shlex.split(rendered.exec_start("kafka1")) if w.startswith("-javaagent:")]
    jar = install_root / "jmx_exporter" / cached.name
    config = config_dir / "jmx-exporter.yml"
    assert agents == [f"-javaagent:{jar}=127.0.0.1:{mport}:{config}"]
    # Where the role's copy and template tasks put them.
    jar.parent.mkdir(parents=True)
    shutil.copyfile(cached, jar)
    config_dir.mkdir(parents=True)
    config.write_text(rendered.file("kafka1", "jmx-exporter.yml"))

    # 2. One KRaft node with the unit's -javaagent.
    libs = ks.ensure_libs()
    workdir = tmp_path / "kafka"
    workdir.mkdir()
    process = start_kafka(workdir, libs, (port, cport), agents[0])
    bootstrap = f"127.0.0.1:{port}"
    url = f"http://127.0.0.1:{mport}/metrics"
    try:
        deadline = time.monotonic() + 90
        while "Kafka Server started" not in ks._read(workdir / "server.log"):
            assert process.poll() is None, f"Kafka exited with {process.returncode}:\n{ks.tail(workdir)}"
            assert time.monotonic() < deadline, f"Kafka did not start within 90 s:\n{ks.tail(workdir)}"
            time.sleep(0.5)

        # 3. Traffic: records in and out of TOPIC; a failing produce to FAILING_TOPIC.
        for topic, extra in ((TOPIC, []), (FAILING_TOPIC, ["--config", "cleanup.policy=compact"])):
            created = cli(libs, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bootstrap, "--create",
                          "--topic", topic, "--partitions", "2", "--replication-factor", "1", *extra)
            assert created.returncode == 0, created.stdout + created.stderr
        records = "".join(f"record-{i}\n" for i in range(RECORDS))
        produced = cli(libs, "kafka.tools.ConsoleProducer", "--bootstrap-server", bootstrap, "--topic", TOPIC,
                       "--producer-property", "acks=all", stdin=records)
        assert produced.returncode == 0, produced.stdout + produced.stderr
        consumed = cli(libs, "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
                       "--topic", TOPIC, "--from-beginning", "--max-messages", str(RECORDS), "--timeout-ms", "60000")
        assert sorted(consumed.stdout.split()) == sorted(records.split()), consumed.stdout + consumed.stderr
        # The broker refuses it (InvalidRecordException: a compacted topic needs keys), not the producer.
        failing = cli(libs, "kafka.tools.ConsoleProducer", "--bootstrap-server", bootstrap, "--topic", FAILING_TOPIC,
                      "--producer-property", "retries=0", stdin="no-key\n")
        failing_output = failing.stdout + failing.stderr

        # 4. The scrape, until complete or the deadline.
        deadline = time.monotonic() + 60
        series: Series = {}
        while True:
            try:
                series = scrape(url)
            except OSError:
                series = {}
            if complete(series) or time.monotonic() > deadline:
                break
            time.sleep(1)
        # Bound to 127.0.0.1 only: another loopback address has nothing on that port (0.0.0.0 would answer).
        with socket.socket() as sock:
            sock.settimeout(2)
            other_loopback = sock.connect_ex(("127.0.0.2", mport))
    finally:
        stop(process)

    assert other_loopback != 0, "the agent answers on 127.0.0.2: it is not bound to 127.0.0.1 only"

    missing = sorted(KAFKA_NAMES - names(series))
    assert not missing, f"missing from {url}: {missing}\n{ks.tail(workdir)}"
    assert complete(series), (sorted(k for k in series if k[0].startswith("kafka_server_brokertopicmetrics")),
                              failing_output)
    # Exactly the contract's Kafka names: nothing else from Kafka's MBeans.
    assert {n for n in names(series) if n.startswith("kafka_")} == KAFKA_NAMES
    assert {n.split("_")[0] for n in names(series)} <= {"kafka", "jvm", "process", "jmx"}

    # Per-topic series carry `topic`, the broker-wide ones none; the broker-wide counts cover the topic's.
    for name in TOPIC_COUNTERS:
        assert len(with_labels(series, name)) == len({ls for n, ls in series if n == name})
        broker_wide = [v for labels, v in with_labels(series, name) if not labels]
        assert len(broker_wide) == 1, (name, with_labels(series, name))
        assert all(set(labels) == {"topic"} for labels, _ in with_labels(series, name) if labels), name
        per_topic = sum(v for labels, v in with_labels(series, name) if labels)
        assert broker_wide[0] >= per_topic, (name, broker_wide, per_topic)
    assert with_labels(series, "kafka_server_brokertopicmetrics_messagesin_total", topic=TOPIC)[0][1] == RECORDS
    assert with_labels(series, "kafka_server_brokertopicmetrics_bytesin_total", topic=TOPIC)[0][1] > 0
    assert with_labels(series, "kafka_server_brokertopicmetrics_bytesout_total", topic=TOPIC)[0][1] > 0
    assert with_labels(series, "kafka_server_brokertopicmetrics_failedproducerequests_total",
                       topic=FAILING_TOPIC)[0][1] >= 1, failing_output

    # Requests: counted by type and version; total time at the 0.50 and 0.99 quantiles only.
    produce = with_labels(series, "kafka_network_requestmetrics_requests_total", request="Produce")
    assert produce and all(set(labels) == {"request", "version"} for labels, _ in produce)
    assert sum(v for _, v in produce) >= 2
    requests = {labels["request"] for labels, _ in with_labels(series, "kafka_network_requestmetrics_requests_total")}
    assert requests <= set(DEFAULTS["kafka_jmx_exporter_request_types"])
    times = with_labels(series, "kafka_network_requestmetrics_totaltimems")
    assert {labels["quantile"] for labels, _ in times} == {"0.50", "0.99"}
    assert {labels["request"] for labels, _ in times} == set(DEFAULTS["kafka_jmx_exporter_request_types"])

    # A single combined node: it is the active controller and the quorum leader; everything in sync.
    def value(name: str) -> float:
        (only,) = with_labels(series, name)
        return only[1]
    assert value("kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value("kafka_raft_current_leader") == 1  # node.id=1
    assert value("kafka_raft_current_epoch") >= 1
    assert value("kafka_raft_high_watermark") > 0 and value("kafka_raft_log_end_offset") > 0
    assert value("kafka_server_replicamanager_underreplicatedpartitions") == 0
    # Our 4 partitions plus __consumer_offsets' 3 (the console consumer's group).
    assert value("kafka_server_replicamanager_partitioncount") == 7
    assert value("kafka_controller_kafkacontroller_globalpartitioncount") == 7
    assert value("kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    assert value("jmx_scrape_error") == 0

    # The agent's JVM metrics, and a small scrape.
    assert {"jvm_memory_used_bytes", "jvm_threads_current", "process_cpu_seconds_total"} <= names(series)
    print(f"\n{len(series)} series from {url}: "
          f"{sum(1 for n, _ in series if n.startswith('kafka_'))} kafka_*, "
          f"{sum(1 for n, _ in series if n.startswith(('jvm_', 'process_')))} jvm_*/process_*")
    assert len(series) < MAX_SERIES
