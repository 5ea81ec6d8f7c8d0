"""A throw-away multi-node KRaft Kafka 3.9.1 on loopback, from the pinned jars (for the *_real.py tests).

3 combined broker+controller nodes (ids 1-3, the static quorum) and broker-only nodes (id 4, ...), PLAINTEXT,
small heaps. The jars come from ~/.cache/kraftwerk/kafka-3.9.1-maven/libs (KRAFTWERK_TEST_KAFKA_LIBS), fetched
by lab/fetch-kafka-maven.py when missing (apps/tests/kafka_server.py's ensure_libs). The CLI launchers are
written like the role's (roles/kafka/templates/kafka-cli.sh.j2), main classes from roles/kafka/vars/main.yml.

Ports: KRAFTWERK_TEST_CLUSTER_PORT (default 39400): node i listens on base+i (clients, brokers) and base+10+i
(controller). Every JVM is stopped by stop() (the fixture calls it also when a test fails).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "apps" / "tests"))
from kafka_server import ensure_libs  # noqa: E402  (apps/tests/kafka_server.py: the single-node helper)

HOST = "127.0.0.1"
BASE = int(os.environ.get("KRAFTWERK_TEST_CLUSTER_PORT", "39400"))
CLI_TOOLS = yaml.safe_load((REPO / "roles/kafka/vars/main.yml").read_text())["kafka_cli_tools"]
# Small and quick: the CLIs start many short JVMs on a 2-core machine.
CLI_JVM = "-Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
NODE_JVM = ["-Xms128m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]

PROPERTIES = """\
process.roles={roles}
node.id={id}
controller.quorum.voters={voters}
listeners={listeners}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={logdir}
num.partitions=1
default.replication.factor=2
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
log.cleaner.enable=false
"""

LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={logfile}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""

TOOLS_LOG4J = "log4j.rootLogger=WARN, stderr\nlog4j.appender.stderr=org.apache.log4j.ConsoleAppender\n" \
              "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n" \
              "log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\nlog4j.appender.stderr.Target=System.err\n"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class Cluster:
    """Nodes 1-3 combined (the voters), nodes 4.. broker-only."""

    def __init__(self, workdir: Path, brokers_only: int = 1) -> None:
        self.workdir = workdir
        self.java = os.environ.get("KRAFTWERK_TEST_JAVA") or shutil.which("java") or "java"
        self.libs = ensure_libs()
        self.ids = list(range(1, 4 + brokers_only))
        self.voters = ",".join(f"{i}@{HOST}:{BASE + 10 + i}" for i in (1, 2, 3))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.bin = workdir / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        (workdir / "tools-log4j.properties").write_text(TOOLS_LOG4J)
        for name, main in CLI_TOOLS.items():
            launcher = self.bin / name
            launcher.write_text(f"#!/bin/sh\nexec {self.java} {CLI_JVM} "
                                f"-Dlog4j.configuration=file:{workdir}/tools-log4j.properties "
                                f"-cp '{self.libs}/*' {main} \"$@\"\n")
            launcher.chmod(0o755)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{BASE + i}" for i in (1, 2, 3))

    def props(self, node: int) -> Path:
        return self.workdir / f"node{node}" / "server.properties"

    def start(self, timeout: float = 180.0) -> None:
        busy = [p for i in self.ids for p in (BASE + i, BASE + 10 + i) if port_open(p)]
        if busy:
            raise RuntimeError(f"ports {busy} on {HOST} are in use: set KRAFTWERK_TEST_CLUSTER_PORT")
        cluster_id = self._storage(["random-uuid"]).strip().splitlines()[-1]
        for node in self.ids:
            combined = node <= 3
            home = self.workdir / f"node{node}"
            home.mkdir(parents=True, exist_ok=True)
            listeners = f"PLAINTEXT://{HOST}:{BASE + node}" + (f",CONTROLLER://{HOST}:{BASE + 10 + node}" if combined else "")
            self.props(node).write_text(PROPERTIES.format(
                roles="broker,controller" if combined else "broker", id=node, voters=self.voters,
                listeners=listeners, host=HOST, port=BASE + node, logdir=home / "data"))
            (home / "log4j.properties").write_text(LOG4J.format(logfile=home / "server.log"))
            self._storage(["format", "-t", cluster_id, "-c", str(self.props(node))])
        for node in self.ids:
            self.start_node(node)
        deadline = time.monotonic() + timeout
        for node in self.ids:
            self.wait_started(node, deadline)

    def start_node(self, node: int) -> None:
        home = self.workdir / f"node{node}"
        out = (home / "stdout.log").open("ab")
        self.procs[node] = subprocess.Popen(
            [self.java, *NODE_JVM, f"-Dlog4j.configuration=file:{home}/log4j.properties", "-cp", f"{self.libs}/*",
             "kafka.Kafka", str(self.props(node))],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, node: int, deadline: float) -> None:
        log = self.workdir / f"node{node}" / "server.log"
        while time.monotonic() < deadline:
            proc = self.procs[node]
            if proc.poll() is not None:
                raise RuntimeError(f"node {node} exited with {proc.returncode}:\n{self.tail(node)}")
            if port_open(BASE + node) and log.exists() and "started (kafka.server" in log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"node {node} did not start in time:\n{self.tail(node)}")

    def stop_node(self, node: int) -> None:
        proc = self.procs.get(node)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        # Brokers first (a broker's controlled shutdown needs the controllers), then the quorum all at once (one by
        # one, the last controller would wait for a majority that is gone).
        for node in sorted(n for n in self.procs if n > 3):
            self.stop_node(node)
        quorum = [self.procs[n] for n in (1, 2, 3) if n in self.procs and self.procs[n].poll() is None]
        for proc in quorum:
            proc.terminate()
        for proc in quorum:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def tail(self, node: int, lines: int = 30) -> str:
        log = self.workdir / f"node{node}" / "server.log"
        text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
        return "\n".join(text)

    def cli(self, tool: str, *args: str, check: bool = True, bootstrap: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / tool)] + (["--bootstrap-server", self.bootstrap] if bootstrap else []) + list(args)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def _storage(self, args: list[str]) -> str:
        proc = subprocess.run([self.java, "-Xmx192m", "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", *args],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"StorageTool {args[0]} failed: {proc.stdout}{proc.stderr}")
        return proc.stdout


if __name__ == "__main__":
    # Start a cluster by hand (to capture CLI output): python kafka_cluster.py /tmp/kc ; Ctrl-C stops it.
    import signal

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    c = Cluster(Path(sys.argv[1]))
    try:
        c.start()
        print("up:", c.bootstrap, "bin:", c.bin, flush=True)
        while True:
            time.sleep(3600)
    finally:
        c.stop()
