"""tasks/version.yml for real, through ansible-playbook on local-connection hosts: the kafka_node_version module
reads each node's install tree, and the checks refuse a silent downgrade, naming the nodes, or let it through with
kafka_allow_downgrade; an upgrade is reported. No Kafka runs here (no systemd unit: `running` is empty, and the
finalized metadata.version is not read), so this covers the installed-version half; test_upgrade.py covers the
filters with running versions and a finalized metadata.version, test_upgrade_real.py the modules against a JVM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parent.parent
REPO = ROLE.parent.parent
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"

PLAY = """\
- name: Check the move to kafka_version
  hosts: kafka
  gather_facts: false
  tasks:
    - name: Run the role's version check
      ansible.builtin.include_role:
        name: kafka
        tasks_from: version
"""


def tree(root: Path, version: str | None) -> Path:
    """An install root whose `current` points at `version` (no link at all for None)."""
    if version:
        libs = root / version / "libs"
        libs.mkdir(parents=True)
        for name in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar"):
            (libs / name).write_bytes(b"")
        (root / "current").symlink_to(root / version)
    else:
        root.mkdir(parents=True)
    return root


def run(tmp: Path, installed: dict[str, str | None], extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    hosts = {h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "kafka_install_root": str(tree(tmp / h, v))} for h, v in installed.items()}
    inv = {"all": {"children": {"kafka": {"hosts": hosts}}}}
    (tmp / "hosts.yml").write_text(json.dumps(inv))
    (tmp / "play.yml").write_text(str(extra.pop("_play", PLAY)))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(REPO / "roles"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(tmp / "hosts.yml"), str(tmp / "play.yml"),
                           "-e", json.dumps(extra)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)


def flat(res: subprocess.CompletedProcess[str]) -> str:
    return " ".join((res.stdout + res.stderr).split())


@pytest.mark.parametrize("allow", [False, True])
def test_downgrade_is_refused_unless_allowed(tmp_path: Path, allow: bool) -> None:
    res = run(tmp_path, {"k1": "3.9.1", "k2": "3.8.1", "k3": None},
              {"kafka_version": "3.8.1", "kafka_allow_downgrade": allow})
    out = flat(res)
    if allow:
        assert res.returncode == 0, out[-4000:]
        assert "Kafka 3.9.1 on k1 -> 3.8.1" in out, out[-4000:]
    else:
        assert res.returncode != 0
        assert "kafka_version 3.8.1 is lower than what the cluster has: k1 has installed 3.9.1." in out, out[-4000:]
        assert "k2" not in out.split("lower than what the cluster has:")[1].split(".")[0]


def test_upgrade_is_reported_and_no_change_is_silent(tmp_path: Path) -> None:
    res = run(tmp_path / "a", {"k1": "3.8.1", "k2": "3.8.1", "k3": "3.9.1"}, {"kafka_version": "3.9.1"})
    out = flat(res)
    assert res.returncode == 0, out[-4000:]
    assert "Kafka 3.8.1 on k1, k2 -> 3.9.1: unpacked beside the old version" in out, out[-4000:]
    assert "until playbooks/finalize-upgrade.yml raises it to 3.9-IV0" in out
    assert "changed=0" in out and "changed=1" not in out

    res = run(tmp_path / "b", {"k1": "3.9.1", "k2": "3.9.1", "k3": None}, {"kafka_version": "3.9.1"})
    out = flat(res)
    assert res.returncode == 0, out[-4000:]
    assert "Report the version change" not in out or "skipping: [k1]" in out
    assert "unpacked beside the old version" not in out


def test_finalize_names_the_nodes_that_do_not_run_the_target(tmp_path: Path) -> None:
    """finalize_upgrade.yml (playbooks/finalize-upgrade.yml) goes by what runs: here nothing does, whatever
    `current` points at, so every node is a laggard and nothing is finalized."""
    play = PLAY.replace("tasks_from: version", "tasks_from: finalize_upgrade")
    res = run(tmp_path, {"k1": "3.9.1", "k2": "3.9.1", "k3": "3.8.1"},
              {"kafka_version": "3.9.1", "_kafka_validated": True, "_play": play})
    out = flat(res)
    assert res.returncode != 0
    assert ("metadata.version is raised only once every broker and controller runs Kafka 3.9.1. Not yet: "
            "k1 (Kafka is not running); k2 (Kafka is not running); k3 (Kafka is not running)") in out, out[-4000:]
    assert "Finalize metadata.version" not in out
