"""A rolling upgrade 3.8.1 -> 3.9.1 of a real single-node KRaft Kafka, on the role's pinned jars: no mock.

1. Both manifests' jars are fetched (or checked, when cached) against their pinned sha256
   (lab/fetch-kafka-maven.py): a wrong checksum, a wrong coordinate or a missing jar fails here.
2. A combined broker+controller starts on exactly the 3.8.1 jars (apps/tests/kafka_server.py, which formats it:
   metadata.version 3.8-IV0), records are written with acks=all, and the kafka_node_version module's reading of
   /proc/<pid>/fd says the JVM runs 3.8.1.
3. The kafka_features module (what playbooks/finalize-upgrade.yml runs), through ansible-playbook: it reads
   3.8-IV0, and refuses to finalize 3.9-IV0 while the node runs 3.8.1.
4. The node is stopped and the same log dir is started on the 3.9.1 jars: every record is there, the JVM runs
   3.9.1, and metadata.version is still 3.8-IV0 (a restart never finalizes).
5. kafka_features in check mode reports the change and makes none; then it upgrades with 3.9.1's real
   FeatureCommand: before 3.8-IV0, after 3.9-IV0; run again, it changes nothing.

Needs java (skipped without it) and, the first time, Maven Central (the jars are cached in ~/.cache/kraftwerk).
One JVM at a time, on loopback ports 29192/29193 (KRAFTWERK_TEST_UPGRADE_PORTS="client,controller"): not the
apps tests' 29092/29093, so both can run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka_test_support import load_module, needs_java

ROLE = Path(__file__).resolve().parent.parent
REPO = ROLE.parent.parent
OLD, NEW = "3.8.1", "3.9.1"
FEATURES_CLASS = "org.apache.kafka.tools.FeatureCommand"
PORTS = tuple(int(p) for p in os.environ.get("KRAFTWERK_TEST_UPGRADE_PORTS", "29192,29193").split(","))
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"

# One worker runs the whole file under pytest-xdist (./kw unit: --dist loadgroup): the jars are fetched once.
pytestmark = [needs_java, pytest.mark.xdist_group("upgrade-real")]


ks = load_module("kraftwerk_kafka_server", REPO / "apps" / "tests" / "kafka_server.py")
node_version = load_module("kafka_node_version", ROLE / "library" / "kafka_node_version.py")
kafka_features = load_module("kafka_features", ROLE / "library" / "kafka_features.py")

PLAYBOOK = """\
- name: Run kafka_features once
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read or finalize metadata.version
      kafka_features:
        bootstrap_server: "{{ kf_bootstrap }}"
        metadata_version: "{{ kf_metadata_version | default(omit) }}"
        kafka_features_cmd: "{{ kf_cmd }}"
        timeout: 60
      register: kf_result
      ignore_errors: true
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ kf_result | to_json }}"
        dest: "{{ kf_out }}"
        mode: "0600"
      check_mode: false
      diff: false
"""


def java() -> str:
    return os.environ.get("KRAFTWERK_TEST_JAVA") or shutil.which("java") or "java"


def tool(libs: Path, main_class: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([java(), "-Xmx256m", "-cp", f"{libs}/*", main_class, *args], input=stdin,
                          capture_output=True, text=True, timeout=180, check=False)


class Features:
    """The kafka_features module through ansible-playbook, with FeatureCommand of the given jars."""

    def __init__(self, tmp: Path, bootstrap: str) -> None:
        self.tmp, self.bootstrap, self.runs = tmp, bootstrap, 0
        (tmp / "play.yml").write_text(PLAYBOOK)
        (tmp / "ansible.cfg").write_text(f"[defaults]\nlibrary = {ROLE / 'library'}\nstdout_callback = default\n")

    def __call__(self, libs: Path, metadata_version: str | None = None, *flags: str) -> dict[str, Any]:
        self.runs += 1
        out = self.tmp / f"result-{self.runs}.json"
        extra: dict[str, Any] = {"kf_bootstrap": self.bootstrap, "kf_out": str(out),
                                 "kf_cmd": [java(), "-Xmx256m", "-cp", f"{libs}/*", FEATURES_CLASS],
                                 "ansible_python_interpreter": sys.executable}
        if metadata_version:
            extra["kf_metadata_version"] = metadata_version
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(self.tmp / "play.yml"),
                               "-e", json.dumps(extra), *flags],
                              cwd=self.tmp, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert out.exists(), f"playbook did not run:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(out.read_text())


def manifest_jars(version: str) -> list[str]:
    data = yaml.safe_load((ROLE / "vars" / f"maven-{version}.yml").read_text())
    return [f"{a['artifact']}-{a['version']}.jar" for a in data["kafka_maven_artifacts"]]


@pytest.fixture(scope="module")
def libs() -> dict[str, Path]:
    """Each version's jars, checked against its manifest's sha256 (fetched when missing)."""
    out = {}
    for version in (OLD, NEW):
        path = ks.ensure_libs(version, verify=True)
        missing = [j for j in manifest_jars(version) if not (path / j).is_file()]
        assert not missing, f"{version}: jars of the manifest missing in {path}: {missing}"
        out[version] = path
    return out


@pytest.mark.parametrize("version", [OLD, NEW])
def test_every_launcher_main_class_is_in_the_pinned_jars(libs: dict[str, Path], version: str) -> None:
    """vars/main.yml kafka_cli_tools (and kafka.Kafka) against the classes of exactly the manifest's jars."""
    tools = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["kafka_cli_tools"]
    classes: set[str] = set()
    for jar in manifest_jars(version):
        with zipfile.ZipFile(libs[version] / jar) as z:
            classes.update(n[:-6].replace("/", ".") for n in z.namelist() if n.endswith(".class"))
    wanted = {"kafka.Kafka", *tools.values()}
    assert "kafka-features" in tools and tools["kafka-features"] == FEATURES_CLASS
    assert not sorted(wanted - classes), f"{version}: main classes not in the pinned jars"


def test_rolling_upgrade_381_to_391_keeps_the_records_and_finalizes_only_on_request(
        libs: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "node"
    features = Features(tmp_path, "")
    records = [f"upgrade-record-{i:04d}" for i in range(500)]

    # --- 3.8.1 -------------------------------------------------------------------------------------
    kafka = ks.start_kafka(work, version=OLD, ports=PORTS)
    try:
        features.bootstrap = kafka.bootstrap
        assert node_version.jar_version(node_version.running_jar(kafka.pid)) == OLD
        assert node_version.running_jar(kafka.pid).startswith(str(libs[OLD]))
        res = tool(libs[OLD], "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", kafka.bootstrap,
                   "--create", "--topic", "upgrade-test", "--partitions", "3", "--replication-factor", "1")
        assert res.returncode == 0, res.stdout + res.stderr
        res = tool(libs[OLD], "kafka.tools.ConsoleProducer", "--bootstrap-server", kafka.bootstrap,
                   "--topic", "upgrade-test", "--producer-property", "acks=all", stdin="\n".join(records) + "\n")
        assert res.returncode == 0, res.stdout + res.stderr

        before = features(libs[OLD])
        assert not before.get("failed"), before
        assert (before["before"], before["supported_max"]) == ("3.8-IV0", "3.8-IV0"), before
        assert "kraft.version" not in before["features"]  # 3.8.1 has no kraft.version feature

        # The 3.9.1 tools against the 3.8.1 node: finalize-upgrade.yml's module refuses, naming the level.
        refused = features(libs[NEW], "3.9-IV0")
        assert refused.get("failed") and "supports metadata.version up to 3.8-IV0" in refused["msg"], refused
        # ... and so does the controller itself, asked directly.
        res = tool(libs[NEW], FEATURES_CLASS, "--bootstrap-server", kafka.bootstrap, "upgrade", "--metadata", "3.9")
        assert res.returncode != 0 and "only supports versions" in res.stdout + res.stderr, res.stdout + res.stderr
    finally:
        kafka.stop()

    # --- the same log dir on 3.9.1 ---------------------------------------------------------------------
    kafka = ks.start_kafka(work, version=NEW, ports=PORTS)
    try:
        assert node_version.jar_version(node_version.running_jar(kafka.pid)) == NEW
        res = tool(libs[NEW], "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server",
                   kafka.bootstrap, "--topic", "upgrade-test", "--from-beginning",
                   "--max-messages", str(len(records)), "--timeout-ms", "60000")
        found = [line for line in res.stdout.splitlines() if line.startswith("upgrade-record-")]
        assert sorted(found) == records, f"{len(found)} of {len(records)} records after the restart: {res.stderr[-2000:]}"

        rolled = features(libs[NEW])
        assert not rolled.get("failed"), rolled
        assert (rolled["before"], rolled["supported_max"]) == ("3.8-IV0", "3.9-IV0"), rolled
        assert rolled["features"]["kraft.version"]["finalized"] == "0", rolled

        checked = features(libs[NEW], "3.9-IV0", "--check")
        assert checked["changed"] and checked["after"] == "3.9-IV0" and checked["before"] == "3.8-IV0", checked
        assert features(libs[NEW])["before"] == "3.8-IV0", "check mode changed metadata.version"

        upgraded = features(libs[NEW], "3.9-IV0")
        assert not upgraded.get("failed"), upgraded
        assert upgraded["changed"] and (upgraded["before"], upgraded["after"]) == ("3.8-IV0", "3.9-IV0"), upgraded

        again = features(libs[NEW], "3.9-IV0")
        assert not again.get("failed") and not again["changed"], again
        assert (again["before"], again["after"]) == ("3.9-IV0", "3.9-IV0"), again

        res = tool(libs[NEW], FEATURES_CLASS, "--bootstrap-server", kafka.bootstrap, "describe")
        assert "FinalizedVersionLevel: 3.9-IV0" in res.stdout, res.stdout + res.stderr
        described = kafka_features.parse_describe(res.stdout)
        assert described["metadata.version"]["finalized"] == "3.9-IV0"
    finally:
        kafka.stop()
