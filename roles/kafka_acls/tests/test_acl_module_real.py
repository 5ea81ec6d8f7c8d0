"""The kafka_acl module against a real Kafka broker with an authorizer, through ansible-playbook: no mock.

Runs when all three variables are set (otherwise every test is skipped):
  KRAFTWERK_TEST_SASL_BOOTSTRAP  host:port of a SASL listener of a broker with an authorizer
                                 (StandardAuthorizer), e.g. 127.0.0.1:39092
  KRAFTWERK_TEST_ADMIN_CONFIG    client properties file of a super user for that listener (--command-config)
  KRAFTWERK_TEST_KAFKA_BIN       directory holding the kafka-acls launcher
When they are set but the broker cannot be reached or the launcher is missing, the tests fail.

The test ACLs belong to principals under a fresh prefix and are removed at the end. The remove_undeclared
test declares every ACL the cluster already had, so that only the test's own undeclared ACL goes. Example:
  KRAFTWERK_TEST_SASL_BOOTSTRAP=127.0.0.1:39092 KRAFTWERK_TEST_ADMIN_CONFIG=/tmp/lab/admin.properties \
  KRAFTWERK_TEST_KAFKA_BIN=/tmp/lab/bin pytest -v roles/kafka_acls/tests/test_acl_module_real.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

ROLE = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("KRAFTWERK_TEST_SASL_BOOTSTRAP", "")
ADMIN_CONFIG = os.environ.get("KRAFTWERK_TEST_ADMIN_CONFIG", "")
KAFKA_BIN = os.environ.get("KRAFTWERK_TEST_KAFKA_BIN", "")

pytestmark = pytest.mark.skipif(
    not (BOOTSTRAP and ADMIN_CONFIG and KAFKA_BIN),
    reason="set KRAFTWERK_TEST_SASL_BOOTSTRAP, KRAFTWERK_TEST_ADMIN_CONFIG and KRAFTWERK_TEST_KAFKA_BIN to run "
           "against a real broker with an authorizer")

_spec = importlib.util.spec_from_file_location("kafka_acl", ROLE / "library" / "kafka_acl.py")
assert _spec is not None and _spec.loader is not None
ka = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ka)

PLAYBOOK = """\
- name: Run kafka_acl once
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Keep the ACLs
      kafka_acl:
        bootstrap_server: "{{ ka_bootstrap }}"
        command_config: "{{ ka_command_config }}"
        acls: "{{ ka_acls }}"
        remove_undeclared: "{{ ka_remove }}"
        kafka_acls_bin: "{{ ka_bin }}/kafka-acls"
        timeout: 90
      register: ka_result
      ignore_errors: true
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ ka_result | to_json }}"
        dest: "{{ ka_out }}"
        mode: "0600"
      check_mode: false
      diff: false
"""


class Lab:
    """The broker, a scratch directory and helpers to run the module and the CLI."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = "ka-" + uuid.uuid4().hex[:8] + "-"
        self.playbook = tmp / "run.yml"
        self.playbook.write_text(PLAYBOOK)
        (tmp / "ansible.cfg").write_text("[defaults]\nlibrary = %s\nmodule_utils = %s\ninterpreter_python = auto_silent\n"
                                         "localhost_warning = false\n"
                                         % (ROLE / "library", ROLE.parent.parent / "plugins" / "module_utils"))
        self.runs = 0
        self.last_stdout = ""

    def principal(self, short: str) -> str:
        return "User:" + self.prefix + short

    def module(self, acls: list[dict[str, Any]], *flags: str, remove: bool = False,
               command_config: str = ADMIN_CONFIG) -> dict[str, Any]:
        """Run the module through ansible-playbook; return its registered result (with diff when asked)."""
        self.runs += 1
        out = self.tmp / ("result-%d.json" % self.runs)
        extra = self.tmp / ("vars-%d.json" % self.runs)
        extra.write_text(json.dumps({"ka_bootstrap": BOOTSTRAP, "ka_bin": KAFKA_BIN, "ka_acls": acls,
                                     "ka_command_config": command_config, "ka_remove": remove, "ka_out": str(out),
                                     "ansible_python_interpreter": sys.executable}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        proc = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-c", "local", str(self.playbook), "-e", "@%s" % extra, *flags],
            cwd=self.tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
        self.last_stdout = proc.stdout + proc.stderr
        assert out.exists(), "playbook did not run:\n%s\n%s" % (proc.stdout, proc.stderr)
        return json.loads(out.read_text())

    def acls(self) -> set[tuple[str, ...]]:
        """Every ACL of the cluster, as kafka-acls --list prints them."""
        proc = subprocess.run([str(Path(KAFKA_BIN) / "kafka-acls"), "--bootstrap-server", BOOTSTRAP,
                               "--command-config", ADMIN_CONFIG, "--list"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return ka.parse_acl_list(proc.stdout)

    def mine(self) -> set[tuple[str, ...]]:
        return {e for e in self.acls() if e[0].startswith("User:" + self.prefix)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    host, _, port = BOOTSTRAP.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        pytest.fail("KRAFTWERK_TEST_SASL_BOOTSTRAP=%s is set but not reachable: %s" % (BOOTSTRAP, exc))
    if not os.access(Path(KAFKA_BIN) / "kafka-acls", os.X_OK):
        pytest.fail("KRAFTWERK_TEST_KAFKA_BIN=%s has no executable kafka-acls" % KAFKA_BIN)
    if shutil.which("ansible-playbook") is None:
        pytest.fail("ansible-playbook is not on PATH")
    the_lab = Lab(tmp_path_factory.mktemp("kafka_acl"))
    yield the_lab
    for key, operations in ka.group_entries(the_lab.mine()):
        subprocess.run([str(Path(KAFKA_BIN) / "kafka-acls"), "--bootstrap-server", BOOTSTRAP,
                        "--command-config", ADMIN_CONFIG] + ka.acl_args("remove", key, operations),
                       capture_output=True, timeout=120, check=False)


def declared(lab: Lab) -> list[dict[str, Any]]:
    app, ingest, ops = lab.principal("app"), lab.principal("ingest"), lab.principal("ops")
    return [
        {"principal": app, "resource_type": "topic", "name": lab.prefix + "orders", "operations": ["Read", "Describe"]},
        {"principal": app, "resource_type": "group", "name": lab.prefix + "app", "operations": ["Read"]},
        {"principal": ingest, "resource_type": "topic", "name": lab.prefix + "ingest.", "pattern_type": "prefixed",
         "operations": ["Write", "DESCRIBE"]},
        {"principal": ingest, "resource_type": "topic", "name": lab.prefix + "ingest.audit", "permission": "deny",
         "operations": ["Write"]},
        {"principal": ingest, "resource_type": "cluster", "operations": ["IdempotentWrite"]},
        {"principal": ingest, "resource_type": "transactional_id", "name": lab.prefix + "tx.",
         "pattern_type": "prefixed", "operations": ["Write", "Describe"]},
        {"principal": ops, "resource_type": "topic", "name": lab.prefix + "orders", "host": "10.0.0.5",
         "operations": ["AlterConfigs", "DescribeConfigs"]},
    ]


# The tests share one broker state and run in file order: each builds on the previous one.

def test_create(lab: Lab) -> None:
    res = lab.module(declared(lab))
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert len(res["added"]) == 11
    assert res["removed"] == []
    # One --add per principal/permission/host/resource pattern: 7 declared entries, 7 calls.
    assert len(res["commands"]) == 7
    errors, expected = ka.validate_declared(declared(lab))
    assert errors == [] and lab.mine() == expected


def test_rerun_changes_nothing(lab: Lab) -> None:
    res = lab.module(declared(lab))
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert res["added"] == [] and res["removed"] == [] and res["commands"] == []


def test_check_mode_reports_and_changes_nothing(lab: Lab) -> None:
    acls = declared(lab) + [{"principal": lab.principal("app"), "resource_type": "topic",
                             "name": lab.prefix + "orders.dlq", "operations": ["Write"]}]
    before = lab.mine()
    res = lab.module(acls, "--check", "--diff")
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert res["commands"] == []
    assert res["added"] == [{"principal": lab.principal("app"), "resource_type": "topic",
                             "name": lab.prefix + "orders.dlq", "pattern_type": "literal", "operation": "Write",
                             "permission": "allow", "host": "*"}]
    line = "topic literal %sorders.dlq: allow %s Write from *\n" % (lab.prefix, lab.principal("app"))
    assert line not in res["diff"]["before"] and line in res["diff"]["after"]
    assert lab.mine() == before


def test_undeclared_is_reported_and_kept(lab: Lab) -> None:
    acls = declared(lab)[:-1]  # drop the ops ACLs from the declaration
    res = lab.module(acls)
    assert not res.get("failed"), res
    assert res["changed"] is False
    ours = [u for u in res["undeclared"] if u["principal"] == lab.principal("ops")]
    assert sorted(u["operation"] for u in ours) == ["AlterConfigs", "DescribeConfigs"]
    assert all(u["host"] == "10.0.0.5" for u in ours)
    assert "not declared; they are kept" in lab.last_stdout
    assert len([e for e in lab.mine() if e[0] == lab.principal("ops")]) == 2


def test_remove_undeclared_removes_only_the_undeclared(lab: Lab) -> None:
    foreign = [e for e in lab.acls() if not e[0].startswith("User:" + lab.prefix)]
    keep = [{"principal": e[0], "resource_type": e[1], "name": e[2], "pattern_type": e[3], "operations": [e[4]],
             "permission": e[5], "host": e[6]} for e in foreign if e[1] in ka.SUPPORTED_OPERATIONS]
    acls = declared(lab)[:-1] + keep
    # One operation fewer for the prefixed ingest ACL: Describe goes, Write stays.
    acls[2] = dict(acls[2], operations=["Write"])
    res = lab.module(acls, "--diff", remove=True)
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert sorted((r["principal"], r["operation"]) for r in res["removed"]) == [
        (lab.principal("ingest"), "Describe"), (lab.principal("ops"), "AlterConfigs"),
        (lab.principal("ops"), "DescribeConfigs")]
    assert res["added"] == []
    mine = lab.mine()
    assert not [e for e in mine if e[0] == lab.principal("ops")]
    assert ka.acl_entry(lab.principal("ingest"), "topic", lab.prefix + "ingest.", "prefixed", "Write", "allow",
                        "*") in mine
    assert set(foreign) <= lab.acls()
    again = lab.module(acls, remove=True)
    assert again["changed"] is False and again["undeclared"] == [], again


def test_invalid_declaration_is_refused_before_any_call(lab: Lab) -> None:
    res = lab.module([{"principal": "nobody", "resource_type": "group", "name": "g", "operations": ["Write"]}])
    assert res.get("failed") is True
    assert "principal 'nobody' must be Type:name" in res["msg"]
    assert "operation Write is not valid on a group" in res["msg"]
    assert "no ACL was changed" in res["msg"]


def test_kafka_error_is_reported_clearly(lab: Lab, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.properties"
    text = Path(ADMIN_CONFIG).read_text()
    wrong.write_text(text.replace('password="', 'password="x-wrong-', 1))
    res = lab.module(declared(lab), command_config=str(wrong))
    assert res.get("failed") is True
    assert res["msg"].startswith("cannot list the ACLs: the client in command_config could not authenticate")
    assert "SaslAuthenticationException" in res["msg"]
