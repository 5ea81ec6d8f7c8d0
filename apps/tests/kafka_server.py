"""Start a throw-away single-node KRaft Kafka from jars (for the integration tests).

The version is 3.9.1 unless asked otherwise (``version=``): any version with a pinned manifest
``roles/kafka/vars/maven-<version>.yml`` (the role's upgrade test runs 3.8.1, then 3.9.1 on the
same log dir).

Environment:
  KRAFTWERK_TEST_BOOTSTRAP    use this existing cluster instead of starting one
  KRAFTWERK_TEST_KAFKA_LIBS   directory with the Kafka 3.9.1 jars
                              (default ~/.cache/kraftwerk/kafka-<version>-maven/libs; fetched with
                              lab/fetch-kafka-maven.py when missing)
  KRAFTWERK_TEST_KAFKA_PORT / KRAFTWERK_TEST_CONTROLLER_PORT   default 29092 / 29093
  KRAFTWERK_TEST_JAVA         java binary (default: java on PATH)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VERSION = "3.9.1"
DEFAULT_LIBS = Path.home() / f".cache/kraftwerk/kafka-{DEFAULT_VERSION}-maven/libs"
FETCH_SCRIPT = REPO_ROOT / "lab/fetch-kafka-maven.py"
MANIFEST = REPO_ROOT / f"roles/kafka/vars/maven-{DEFAULT_VERSION}.yml"
HOST = "127.0.0.1"


class KafkaStartError(RuntimeError):
    pass


@dataclass
class KafkaProcess:
    bootstrap: str
    process: subprocess.Popen[bytes] | None
    workdir: Path | None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_libs(version: str = DEFAULT_VERSION, verify: bool = False) -> Path:
    """The directory holding the pinned jars of ``version``, fetched when missing.

    With ``verify``, the fetch script also runs when the jars are there: it checks each one against
    the manifest's sha256 (and fetches what is missing or different), so a wrong manifest fails.
    """
    default = Path.home() / f".cache/kraftwerk/kafka-{version}-maven/libs"
    override = os.environ.get("KRAFTWERK_TEST_KAFKA_LIBS") if version == DEFAULT_VERSION else None
    libs = Path(override or str(default)).expanduser()
    manifest = REPO_ROOT / f"roles/kafka/vars/maven-{version}.yml"
    jar = f"kafka_2.13-{version}.jar"
    if (libs / jar).is_file() and not verify:
        return libs
    if not FETCH_SCRIPT.exists() or not manifest.exists():
        raise KafkaStartError(
            f"Kafka jars missing in {libs} and {FETCH_SCRIPT} / {manifest} not found to fetch "
            "them; set KRAFTWERK_TEST_KAFKA_LIBS or KRAFTWERK_TEST_BOOTSTRAP"
        )
    cmd = [sys.executable, str(FETCH_SCRIPT), "--manifest", str(manifest), "--dest", str(libs)]
    cmd.append("--quiet")
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (libs / jar).is_file():
        raise KafkaStartError(
            f"fetching Kafka jars failed ({result.returncode}): {result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        )
    return libs


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{cport}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={logdir}
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=10000
"""

LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={logfile}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _java() -> str:
    java = os.environ.get("KRAFTWERK_TEST_JAVA") or shutil.which("java")
    if not java:
        raise KafkaStartError("java not found (install a JRE >= 11 or set KRAFTWERK_TEST_JAVA)")
    return java


def _run_tool(java: str, classpath: str, args: list[str]) -> str:
    result = subprocess.run(
        [java, "-cp", classpath, "kafka.tools.StorageTool", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise KafkaStartError(f"StorageTool {args[0]} failed: {result.stdout}{result.stderr}")
    return result.stdout.strip()


def start_kafka(
    workdir: Path,
    timeout: float = 120.0,
    version: str = DEFAULT_VERSION,
    libs: Path | None = None,
    ports: tuple[int, int] | None = None,
) -> KafkaProcess:
    """Start a combined broker+controller in ``workdir``; format its log dir only once.

    A ``workdir`` whose ``data/meta.properties`` exists (left by an earlier start, e.g. of another
    version) is started as it is: that is a node restarted on new jars. ``ports``: (client,
    controller), else the environment's (default 29092, 29093).
    """
    port, cport = ports or (
        int(os.environ.get("KRAFTWERK_TEST_KAFKA_PORT", "29092")),
        int(os.environ.get("KRAFTWERK_TEST_CONTROLLER_PORT", "29093")),
    )
    for p in (port, cport):
        if port_open(p):
            raise KafkaStartError(
                f"port {HOST}:{p} is already in use; stop that process or set "
                "KRAFTWERK_TEST_BOOTSTRAP to use it"
            )
    java = _java()
    libs = libs or ensure_libs(version)
    classpath = f"{libs}/*"
    workdir.mkdir(parents=True, exist_ok=True)
    props = workdir / "server.properties"
    props.write_text(
        SERVER_PROPERTIES.format(host=HOST, port=port, cport=cport, logdir=workdir / "data")
    )
    log4j = workdir / "log4j.properties"
    log4j.write_text(LOG4J.format(logfile=workdir / "server.log"))
    if not (workdir / "data" / "meta.properties").exists():
        cluster_id = _run_tool(java, classpath, ["random-uuid"]).splitlines()[-1]
        _run_tool(java, classpath, ["format", "-t", cluster_id, "-c", str(props)])
    server_log = workdir / "server.log"
    # Only this start's lines count below ("started"): keep an earlier start's log beside it.
    if server_log.exists():
        server_log.rename(workdir / f"server.log.{int(time.time() * 1000)}")
    out = (workdir / "stdout.log").open("wb")
    process = subprocess.Popen(
        [
            java,
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    kafka = KafkaProcess(f"{HOST}:{port}", process, workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise KafkaStartError(f"Kafka exited with {process.returncode}:\n{tail(workdir)}")
        if port_open(port) and server_log.exists() and "started (kafka.server" in _read(server_log):
            return kafka
        time.sleep(0.5)
    kafka.stop()
    raise KafkaStartError(f"Kafka did not start within {timeout:.0f}s:\n{tail(workdir)}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tail(workdir: Path, lines: int = 40) -> str:
    parts = []
    for name in ("stdout.log", "server.log"):
        text = _read(workdir / name).splitlines()[-lines:]
        parts.append(f"--- {name} ---\n" + "\n".join(text))
    return "\n".join(parts)
