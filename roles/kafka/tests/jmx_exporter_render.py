"""Render the kafka role's JMX exporter files through Ansible itself (shared by test_jmx_exporter*.py).

A tiny playbook (connection local, no host is touched) runs the role's validate entry point, then the role's own
templates: kafka.service.j2 and jmx-exporter.yml.j2, with the role's defaults and vars (import_role exposes them),
and the role's published facts (tasks/facts.yml). With ``fetch``, it also runs tasks/jmx_exporter_fetch.yml, the
role's download of the agent jar into kafka_controller_cache_dir (~/.cache/kraftwerk by default), sha256 verified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLE = Path(__file__).resolve().parent.parent
ROOT = ROLE.parent.parent
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"

# Made-up secrets: the default listeners use SCRAM, and validation wants passwords (nothing is reached).
SECRETS = {"kafka_admin_password": "admin-password-0123", "kafka_broker_password": "broker-password-0123"}

PLAYBOOK = """\
- name: Render the kafka role's unit and JMX exporter configuration
  hosts: kafka
  gather_facts: false
  tasks:
    - name: Validate the variables
      ansible.builtin.import_role:
        name: kafka
        tasks_from: validate
    - name: Download the agent jar as the role does
      ansible.builtin.include_role:
        name: kafka
        tasks_from: jmx_exporter_fetch
      when: jmx_fetch | default(false) | bool
    - name: Publish the facts as the role does
      ansible.builtin.include_role:
        name: kafka
        tasks_from: facts
    - name: Create the output directory
      ansible.builtin.file:
        path: "{{ jmx_out }}/{{ inventory_hostname }}"
        state: directory
        mode: "0700"
    - name: Render the templates
      ansible.builtin.template:
        src: "{{ jmx_role }}/templates/{{ item }}.j2"
        dest: "{{ jmx_out }}/{{ inventory_hostname }}/{{ item }}"
        mode: "0600"
      loop: [kafka.service, jmx-exporter.yml]
    - name: Save the published metrics targets
      ansible.builtin.copy:
        content: "{{ kafka_cluster_metrics_targets | to_json }}"
        dest: "{{ jmx_out }}/{{ inventory_hostname }}/metrics-targets.json"
        mode: "0600"
"""


@dataclass
class Rendered:
    returncode: int
    output: str
    out: Path

    def file(self, host: str, name: str) -> str:
        path = self.out / host / name
        assert path.is_file(), f"{name} was not rendered for {host}:\n{self.output[-6000:]}"
        return path.read_text()

    def exec_start(self, host: str) -> str:
        lines = [line for line in self.file(host, "kafka.service").splitlines() if line.startswith("ExecStart=")]
        assert len(lines) == 1, lines
        return lines[0][len("ExecStart="):]


def render(tmp_path: Path, hosts: dict[str, dict[str, Any]], fetch: bool = False) -> Rendered:
    """Run the playbook on these Kafka hosts (name -> host vars; every one is in group kafka)."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    inventory = {"all": {
        "hosts": {h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **v}
                  for h, v in hosts.items()},
        "children": {"kafka": {"hosts": {h: {} for h in hosts}}},
        "vars": SECRETS,
    }}
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    extra = {"jmx_role": str(ROLE), "jmx_out": str(out), "jmx_fetch": fetch}
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"), "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return Rendered(proc.returncode, proc.stdout + proc.stderr, out)
