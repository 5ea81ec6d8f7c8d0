"""Bad variables fail before any host is touched, with a message that says what to fix.

Each case runs the real site.yml against an inventory whose hosts point at a closed port on 127.0.0.1:
if validation ever let a bad value through, the play would try to connect, fail with "unreachable" and
the expected message would be missing, so the test fails rather than passing by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def write_inventory(tmp_path: Path, kafka: list[str], controllers: list[str] | None = None) -> Path:
    hosts = {h: {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh",
                 "kafka_advertised_host": f"{h}.kraftwerk.invalid"}
             for h in kafka + (controllers or [])}
    children: dict[str, object] = {"kafka": {"hosts": {h: {} for h in kafka}}}
    if controllers:
        children["kafka_controller"] = {"hosts": {h: {} for h in controllers}}
    inv = {"all": {"hosts": hosts, "children": children,
                   "vars": {"ansible_ssh_common_args": "-o ConnectTimeout=1"}}}
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps(inv))
    return path


def run_site(inventory: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default")
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(ROOT / "site.yml"), "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


THREE = ["k1", "k2", "k3"]

CASES = [
    ("replication larger than brokers", THREE, None, {"kafka_default_replication_factor": 4},
     "must each be at most"),
    ("even controller count", ["k1", "k2", "k3", "k4"], ["c1", "c2"], {},
     "it needs an odd number"),
    ("no kafka hosts", ["k1"], None,
     {"kafka_inventory_group": "nokafka", "kafka_default_replication_factor": 1}, "no host in group 'nokafka'"),
    ("controllers only, no broker", ["c1", "c2", "c3"], ["c1", "c2", "c3"], {}, "no broker"),
    ("unknown install method", THREE, None, {"kafka_install_method": "rpm"},
     "kafka_install_method"),
    ("missing checksum", THREE, None, {"kafka_archive_sha256": ""},
     "kafka_archive_sha256 must be the 64-hex-digit sha256"),
    ("bad listener port", THREE, None, {"kafka_broker_port": 70000}, "Bad listener"),
    ("listener ports clash", THREE, None, {"kafka_controller_port": 9092}, "Bad listener"),
    ("advertised wildcard", THREE, None, {"kafka_advertised_host": "0.0.0.0"}, "Bad listener"),
    ("owned key in the escape hatch", THREE, None, {"kafka_extra_properties": {"node.id": 7}},
     "kafka_extra_properties may not set node.id"),
    ("min ISR above replication", THREE, None, {"kafka_min_insync_replicas": 4},
     "min.insync.replicas"),
    ("topic shrink below zero", THREE, None,
     {"kafka_topics_list": [{"name": "t", "partitions": 0, "replication_factor": 3}]}, "partitions"),
    ("topic replication above brokers", THREE, None,
     {"kafka_topics_list": [{"name": "t", "partitions": 3, "replication_factor": 5}]}, "replication"),
]


@pytest.mark.parametrize(("kafka", "controllers", "extra", "message"),
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_fails_before_any_host(tmp_path: Path, kafka: list[str], controllers: list[str] | None,
                                         extra: dict[str, object], message: str) -> None:
    res = run_site(write_inventory(tmp_path, kafka, controllers), extra)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert message in out, out
    assert "UNREACHABLE" not in out, "validation let the play reach the hosts:\n" + out
    assert "Gathering Facts" not in out, out


def test_good_input_reaches_the_hosts(tmp_path: Path) -> None:
    """The control case: with valid variables the play gets past validation and tries to connect."""
    res = run_site(write_inventory(tmp_path, THREE), {})
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "UNREACHABLE" in out, out
