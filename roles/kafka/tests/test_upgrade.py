"""Unit tests of the upgrade logic: the kafka_upgrade filters, the kafka_features and kafka_node_version modules'
pure functions, the per-version data (kafka_releases, manifests, argument specs), and the gates on 3.8.1's output.

The fixtures are real, unedited CLI output captured by the run behind tests/test_upgrade_real.py (single node):
  features-describe-3.8.1.txt                    kafka-features describe, 3.8.1 node and tools
  features-describe-3.9.1-rolled-from-3.8.1.txt  the same log dir restarted on 3.9.1, before finalizing
  features-describe-3.9.1-finalized.txt          after kafka-features upgrade --metadata 3.9-IV0
  quorum-replication-3.8.1.txt                   kafka-metadata-quorum describe --replication (no DirectoryId column)
  topics-describe-3.8.1-single-node.txt          kafka-topics --describe
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from kafka_test_support import load_module

HERE = Path(__file__).resolve().parent
ROLE = HERE.parent
FIXTURES = HERE / "fixtures"


up = load_module("kafka_upgrade_filters", ROLE / "filter_plugins" / "kafka_upgrade.py")
kf = load_module("kafka_features_module", ROLE / "library" / "kafka_features.py")
nv = load_module("kafka_node_version_module", ROLE / "library" / "kafka_node_version.py")
gate = load_module("kafka_gate_module", ROLE / "library" / "kafka_gate.py")

VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
RELEASES = VARS["kafka_releases"]


# --- kafka_releases, the manifests and the argument specs agree -------------------------------------------

def test_every_release_has_a_manifest_of_its_own_version() -> None:
    assert up.kafka_supported_versions(RELEASES) == ["3.8.1", "3.9.1"]
    for version in RELEASES:
        data = yaml.safe_load((ROLE / "vars" / f"maven-{version}.yml").read_text())
        arts = data["kafka_maven_artifacts"]
        kafka = {a["artifact"]: a["version"] for a in arts if a["group"] == "org.apache.kafka"}
        assert set(kafka.values()) == {version}, kafka
        assert {"kafka_2.13", "kafka-clients", "kafka-server", "kafka-metadata", "kafka-tools"} <= set(kafka)
        assert all(re.fullmatch(r"[0-9a-f]{64}", a["sha256"]) for a in arts)
        coords = [(a["group"], a["artifact"]) for a in arts]
        assert len(coords) == len(set(coords)), "a jar twice in maven-%s.yml" % version
    manifests = sorted(p.name for p in (ROLE / "vars").glob("maven-*.yml"))
    assert manifests == [f"maven-{v}.yml" for v in up.kafka_supported_versions(RELEASES)]


def test_381_manifest_differs_from_391_as_the_reference_says() -> None:
    def jars(v: str) -> dict[tuple[str, str], str]:
        arts = yaml.safe_load((ROLE / "vars" / f"maven-{v}.yml").read_text())["kafka_maven_artifacts"]
        return {(a["group"], a["artifact"]): a["version"] for a in arts}
    old, new = jars("3.8.1"), jars("3.9.1")
    assert len(old) == 61 and len(new) == 60
    assert set(old) - set(new) == {("org.checkerframework", "checker-qual")}
    changed = {k for k in new if old[k] != new[k] and k[0] != "org.apache.kafka"}
    assert {k[1] for k in changed} == {"scala-library", "scala-reflect", "scala-logging_2.13"} | {
        k[1] for k in new if k[0] == "io.netty"}
    assert old[("io.netty", "netty-common")] == "4.1.110.Final" and old[("org.scala-lang", "scala-library")] == "2.13.14"


def test_release_metadata_versions_and_archive_pins() -> None:
    assert RELEASES["3.8.1"]["metadata_version"] == "3.8-IV0"
    assert RELEASES["3.9.1"]["metadata_version"] == "3.9-IV0"
    assert RELEASES["3.9.1"]["archive_sha256"] == "dd4399816e678946cab76e3bd1686103555e69bc8f2ab8686cda71aa15bc31a3"
    assert RELEASES["3.8.1"]["archive_sha256"] == ""  # not in the reference: the archive method refuses it


def test_argument_specs_list_the_supported_versions() -> None:
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert spec["kafka_version"]["choices"] == up.kafka_supported_versions(RELEASES)
    assert spec["kafka_allow_downgrade"]["type"] == "bool"
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["kafka_version"] in RELEASES and defaults["kafka_allow_downgrade"] is False
    assert defaults["kafka_archive_sha256"] == ""


# --- filters ----------------------------------------------------------------------------------------------

def test_version_and_level_keys_compare_as_numbers() -> None:
    assert up.kafka_version_key("3.10.0") > up.kafka_version_key("3.9.1") > up.kafka_version_key("3.8.1")
    assert up.kafka_metadata_key("3.10-IV0") > up.kafka_metadata_key("3.9-IV0") > up.kafka_metadata_key("3.8-IV1")
    assert up.kafka_metadata_key("3.8-IV1") > up.kafka_metadata_key("3.8-IV0")
    for bad in ("3.9", "3.9-iv0", "latest", ""):
        with pytest.raises(ValueError):
            up.kafka_metadata_key(bad)
    with pytest.raises(ValueError):
        up.kafka_version_key("3.9.1-rc1")


NODES_381 = {h: {"installed": "3.8.1", "running": "3.8.1"} for h in ("kafka1", "kafka2", "kafka3")}


def test_upgrade_381_to_391_is_allowed() -> None:
    assert up.kafka_upgrade_errors(NODES_381, "3.9.1", RELEASES, "3.8-IV0") == []
    assert up.kafka_upgrade_summary(NODES_381, "3.9.1") == {"3.8.1": ["kafka1", "kafka2", "kafka3"]}


def test_no_move_when_every_node_runs_the_target() -> None:
    nodes = {h: {"installed": "3.9.1", "running": "3.9.1"} for h in ("kafka1", "kafka2")}
    assert up.kafka_upgrade_summary(nodes, "3.9.1") == {}
    assert up.kafka_upgrade_summary({"new": {"installed": "", "running": ""}}, "3.9.1") == {}


def test_a_node_flipped_but_not_restarted_still_moves() -> None:
    """`current` already on 3.9.1 (an earlier run's install) but the JVM still on 3.8.1: it must restart."""
    nodes = {"kafka1": {"installed": "3.9.1", "running": "3.8.1"}, "kafka2": {"installed": "3.9.1", "running": "3.9.1"}}
    assert up.kafka_upgrade_summary(nodes, "3.9.1") == {"3.8.1": ["kafka1"]}
    assert up.kafka_upgrade_summary({"kafka3": {"installed": "3.8.1", "running": ""}}, "3.9.1") == {"3.8.1": ["kafka3"]}


def test_downgrade_is_refused_naming_the_nodes_unless_allowed() -> None:
    nodes = {"kafka1": {"installed": "3.9.1", "running": "3.9.1"}, "kafka2": {"installed": "3.9.1", "running": "3.8.1"},
             "kafka3": {"installed": "3.8.1", "running": "3.8.1"}}
    errors = up.kafka_upgrade_errors(nodes, "3.8.1", RELEASES, "3.8-IV0")
    assert len(errors) == 1
    assert "kafka_version 3.8.1 is lower than what the cluster has: kafka1 runs 3.9.1; kafka2 has installed 3.9.1" \
        in errors[0]
    assert "kafka_allow_downgrade: true" in errors[0]
    assert up.kafka_upgrade_errors(nodes, "3.8.1", RELEASES, "3.8-IV0", allow_downgrade=True) == []


def test_below_the_finalized_metadata_version_is_refused_even_when_downgrades_are_allowed() -> None:
    nodes = {h: {"installed": "3.9.1", "running": "3.9.1"} for h in ("kafka1", "kafka2", "kafka3")}
    errors = up.kafka_upgrade_errors(nodes, "3.8.1", RELEASES, "3.9-IV0", allow_downgrade=True)
    assert len(errors) == 1 and "finalized metadata.version is 3.9-IV0, and Kafka 3.8.1 supports at most 3.8-IV0" \
        in errors[0]
    assert len(up.kafka_upgrade_errors(nodes, "3.8.1", RELEASES, "3.9-IV0")) == 2


def test_unknown_target_lists_the_supported_versions() -> None:
    assert up.kafka_upgrade_errors(NODES_381, "3.7.0", RELEASES) == [
        "Kafka 3.7.0 is not one of the supported versions (3.8.1, 3.9.1)"]


def test_unknown_or_unreadable_node_versions_do_not_count() -> None:
    nodes = {"kafka1": {"installed": "", "running": ""}, "kafka2": {"installed": "current", "running": ""}}
    assert up.kafka_upgrade_errors(nodes, "3.8.1", RELEASES, "") == []


# --- kafka_features: parsing and planning -----------------------------------------------------------------

def test_parse_describe_of_381() -> None:
    f = kf.parse_describe((FIXTURES / "features-describe-3.8.1.txt").read_text())
    assert list(f) == ["metadata.version"]
    assert f["metadata.version"]["finalized"] == "3.8-IV0" and f["metadata.version"]["supported_max"] == "3.8-IV0"


def test_parse_describe_of_391_rolled_and_finalized() -> None:
    rolled = kf.parse_describe((FIXTURES / "features-describe-3.9.1-rolled-from-3.8.1.txt").read_text())
    assert rolled["metadata.version"]["finalized"] == "3.8-IV0"
    assert rolled["metadata.version"]["supported_max"] == "3.9-IV0"
    assert rolled["kraft.version"] == {"supported_min": "0", "supported_max": "1", "finalized": "0",
                                       "epoch": rolled["kraft.version"]["epoch"]}
    done = kf.parse_describe((FIXTURES / "features-describe-3.9.1-finalized.txt").read_text())
    assert done["metadata.version"]["finalized"] == "3.9-IV0"


def test_parse_describe_unfinalized_metadata_version_is_empty() -> None:
    line = "Feature: metadata.version\tSupportedMinVersion: 3.0-IV1\tSupportedMaxVersion: 3.9-IV0\t" \
           "FinalizedVersionLevel: -\tEpoch: -"
    assert kf.parse_describe(line)["metadata.version"]["finalized"] == ""


def test_plan() -> None:
    assert kf.plan("3.8-IV0", "3.9-IV0", "3.9-IV0")[0] == "upgrade"
    assert kf.plan("3.9-IV0", "3.9-IV0", "3.9-IV0") == ("none", "metadata.version is already 3.9-IV0")
    with pytest.raises(ValueError, match="never lowers it"):
        kf.plan("3.9-IV0", "3.9-IV0", "3.8-IV0")
    with pytest.raises(ValueError, match="supports metadata.version up to 3.8-IV0"):
        kf.plan("3.8-IV0", "3.8-IV0", "3.9-IV0")
    with pytest.raises(ValueError):
        kf.plan("3.8-IV0", "3.9-IV0", "3.9")


# --- kafka_node_version: what runs, from a fake /proc and install tree ------------------------------------

def test_jar_version() -> None:
    assert nv.jar_version("/opt/kafka/3.9.1/libs/kafka_2.13-3.9.1.jar") == "3.9.1"
    assert nv.jar_version("kafka_2.12-3.8.1.jar") == "3.8.1"
    for other in ("/opt/kafka/3.9.1/libs/kafka-clients-3.9.1.jar", "/opt/kafka/3.9.1/libs/kafka_2.13-3.9.1.jar.tmp",
                  "/opt/kafka/3.9.1/libs/kafka-tools-3.9.1.jar", "/proc/1/fd/pipe:[123]", ""):
        assert nv.jar_version(other) == ""


def _tree(tmp: Path, version: str) -> Path:
    libs = tmp / "opt" / version / "libs"
    libs.mkdir(parents=True)
    for name in (f"kafka-clients-{version}.jar", f"kafka_2.13-{version}.jar", "zstd-jni-1.5.6-4.jar"):
        (libs / name).write_bytes(b"")
    return libs


def test_installed_version_follows_the_link(tmp_path: Path) -> None:
    _tree(tmp_path, "3.8.1")
    _tree(tmp_path, "3.9.1")
    current = tmp_path / "opt" / "current"
    assert nv.installed_version(str(current)) == ""
    current.symlink_to(tmp_path / "opt" / "3.8.1")
    assert nv.installed_version(str(current)) == "3.8.1"
    current.unlink()
    current.symlink_to(tmp_path / "opt" / "3.9.1")
    assert nv.installed_version(str(current)) == "3.9.1"


def test_running_jar_reads_the_open_files_not_the_link(tmp_path: Path) -> None:
    """A JVM started on 3.8.1 keeps 3.8.1's jar open after `current` moved to 3.9.1."""
    old = _tree(tmp_path, "3.8.1")
    proc = tmp_path / "proc"
    fd = proc / "4242" / "fd"
    fd.mkdir(parents=True)
    (fd / "0").symlink_to("/dev/null")
    (fd / "7").symlink_to(old / "kafka-clients-3.8.1.jar")
    (fd / "12").symlink_to(old / "kafka_2.13-3.8.1.jar")
    assert nv.running_jar(4242, str(proc)) == str(old / "kafka_2.13-3.8.1.jar")
    assert nv.jar_version(nv.running_jar(4242, str(proc))) == "3.8.1"
    assert nv.running_jar(0, str(proc)) == "" and nv.running_jar(999, str(proc)) == ""


def test_running_jar_of_this_process_is_empty() -> None:
    assert nv.running_jar(os.getpid()) == ""


# --- the gates read 3.8.1's CLI output too (a 3.8.1 deployment's first start runs them) --------------------

def test_gate_parses_381_quorum_without_directory_id() -> None:
    text = (FIXTURES / "quorum-replication-3.8.1.txt").read_text()
    assert "DirectoryId" not in text
    assert gate.parse_quorum(text) == [{"node_id": 1, "lag": 0, "last_fetch_ms": 1796609387842, "status": "Leader"}]


def test_gate_parses_381_topics_and_holds() -> None:
    parts = gate.parse_partitions((FIXTURES / "topics-describe-3.8.1-single-node.txt").read_text(), 1)
    assert [(p["topic"], p["partition"], p["leader"], p["isr"]) for p in parts] == [
        ("x", 0, 1, [1]), ("x", 1, 1, [1]), ("x", 2, 1, [1])]
    quorum = gate.parse_quorum((FIXTURES / "quorum-replication-3.8.1.txt").read_text())
    assert gate.evaluate("healthy", None, parts, quorum, 20) == []
