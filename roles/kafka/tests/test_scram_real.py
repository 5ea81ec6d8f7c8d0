"""The kafka_scram module against a real Kafka broker with a SCRAM listener, through ansible-playbook: no mock.

Runs when all three variables are set (otherwise every test is skipped):
  KRAFTWERK_TEST_SASL_BOOTSTRAP  host:port of a SASL/SCRAM listener, e.g. 127.0.0.1:39092
  KRAFTWERK_TEST_ADMIN_CONFIG    client properties file of a super user for that listener (--command-config);
                                 its security.protocol and sasl.mechanism are reused for the test users
  KRAFTWERK_TEST_KAFKA_BIN       directory holding the kafka-configs and kafka-topics launchers
When they are set but the broker cannot be reached or the launchers are missing, the tests fail.

The test users get a fresh prefix and are deleted at the end; the state file lives in a scratch directory.
Each password is proven by authenticating with it (kafka-topics --list). Example:
  KRAFTWERK_TEST_SASL_BOOTSTRAP=127.0.0.1:39092 KRAFTWERK_TEST_ADMIN_CONFIG=/tmp/lab/admin.properties \
  KRAFTWERK_TEST_KAFKA_BIN=/tmp/lab/bin pytest -v roles/kafka/tests/test_scram_real.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
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
           "against a real broker with a SCRAM listener")

_spec = importlib.util.spec_from_file_location("kafka_scram", ROLE / "library" / "kafka_scram.py")
assert _spec is not None and _spec.loader is not None
ks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ks)

PLAYBOOK = """\
- name: Run kafka_scram once
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Keep the SCRAM users
      kafka_scram:
        bootstrap_server: "{{ ks_bootstrap }}"
        command_config: "{{ ks_command_config }}"
        kafka_configs_bin: "{{ ks_bin }}/kafka-configs"
        users: "{{ ks_users }}"
        state_file: "{{ ks_state }}"
        timeout: 90
      register: ks_result
      ignore_errors: true
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ ks_result | to_json }}"
        dest: "{{ ks_out }}"
        mode: "0600"
      check_mode: false
      diff: false
"""


class ArgvWatch:
    """Scans every process's command line while the module runs, for a string that must never be there."""

    def __init__(self, needles: list[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.found: list[str] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path("/proc", pid, "cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in cmdline for n in self.needles):
                    self.found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
            self.scans += 1
            time.sleep(0.01)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Lab:
    """The broker, a scratch directory and helpers to run the module and the CLIs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = "ks-" + uuid.uuid4().hex[:8] + "-"
        self.state = tmp / "state" / "scram-users.state"
        self.state.parent.mkdir(mode=0o700)
        self.playbook = tmp / "run.yml"
        self.playbook.write_text(PLAYBOOK)
        (tmp / "ansible.cfg").write_text("[defaults]\nlibrary = %s\nmodule_utils = %s\ninterpreter_python = auto_silent\n"
                                         "localhost_warning = false\n"
                                         % (ROLE / "library", ROLE.parent.parent / "plugins" / "module_utils"))
        self.runs = 0
        self.last_output = ""

    def name(self, short: str) -> str:
        return self.prefix + short

    def module(self, users: list[dict[str, Any]], *flags: str, command_config: str = ADMIN_CONFIG) -> dict[str, Any]:
        """Run the module through ansible-playbook (-v); return its registered result."""
        self.runs += 1
        out = self.tmp / ("result-%d.json" % self.runs)
        extra = self.tmp / ("vars-%d.json" % self.runs)
        extra.write_text(json.dumps({"ks_bootstrap": BOOTSTRAP, "ks_bin": KAFKA_BIN, "ks_users": users,
                                     "ks_command_config": command_config, "ks_state": str(self.state),
                                     "ks_out": str(out), "ansible_python_interpreter": sys.executable}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        proc = subprocess.run(
            ["ansible-playbook", "-v", "-i", "localhost,", "-c", "local", str(self.playbook), "-e", "@%s" % extra,
             *flags], cwd=self.tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
        extra.unlink()  # it holds the passwords
        self.last_output = proc.stdout + proc.stderr
        assert out.exists(), "playbook did not run:\n%s\n%s" % (proc.stdout, proc.stderr)
        return json.loads(out.read_text())

    def configs(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(KAFKA_BIN) / "kafka-configs"), "--bootstrap-server", BOOTSTRAP,
                               "--command-config", ADMIN_CONFIG, *args],
                              capture_output=True, text=True, timeout=120, check=False)

    def described(self) -> dict[str, dict[str, int]]:
        proc = self.configs("--describe", "--entity-type", "users")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return {k: v for k, v in ks.parse_users_describe(proc.stdout).items() if k.startswith(self.prefix)}

    def authenticates(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> bool:
        """Whether `user` can log in with `password`: kafka-topics --list with a client config of its own."""
        admin = Path(ADMIN_CONFIG).read_text()
        jaas = ('sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required '
                'username="%s" password="%s";' % (user, password))
        text = re.sub(r"(?m)^sasl\.jaas\.config=.*$", lambda _: jaas, admin)
        text = re.sub(r"(?m)^sasl\.mechanism=.*$", "sasl.mechanism=" + mechanism, text)
        config = self.tmp / "client.properties"
        config.write_text(text)
        config.chmod(0o600)
        try:
            proc = subprocess.run([str(Path(KAFKA_BIN) / "kafka-topics"), "--bootstrap-server", BOOTSTRAP,
                                   "--command-config", str(config), "--list"],
                                  capture_output=True, text=True, timeout=120, check=False)
        finally:
            config.unlink()
        if proc.returncode == 0:
            return True
        assert "SaslAuthenticationException" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    host, _, port = BOOTSTRAP.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        pytest.fail("KRAFTWERK_TEST_SASL_BOOTSTRAP=%s is set but not reachable: %s" % (BOOTSTRAP, exc))
    for tool in ("kafka-configs", "kafka-topics"):
        if not os.access(Path(KAFKA_BIN) / tool, os.X_OK):
            pytest.fail("KRAFTWERK_TEST_KAFKA_BIN=%s has no executable %s" % (KAFKA_BIN, tool))
    if shutil.which("ansible-playbook") is None:
        pytest.fail("ansible-playbook is not on PATH")
    the_lab = Lab(tmp_path_factory.mktemp("kafka_scram"))
    yield the_lab
    for name, creds in the_lab.described().items():
        for mechanism in creds:
            the_lab.configs("--alter", "--entity-type", "users", "--entity-name", name, "--delete-config", mechanism)


PASSWORDS = {"app": "App-pw.1:=#!", "ingest": "Ingest-pw-1"}


def declared(lab: Lab, app_password: str = PASSWORDS["app"], ingest_iterations: int = 4096) -> list[dict[str, Any]]:
    return [
        {"name": lab.name("app"), "password": app_password},
        {"name": lab.name("ingest"), "password": PASSWORDS["ingest"], "iterations": ingest_iterations},
        {"name": lab.name("ingest"), "password": PASSWORDS["ingest"], "mechanism": "SCRAM-SHA-256"},
    ]


def no_password_anywhere(lab: Lab, res: dict[str, Any], *passwords: str) -> None:
    dumped = json.dumps(res)
    for password in passwords:
        assert password not in dumped
        assert password not in lab.last_output


# The tests share one broker state and run in file order: each builds on the previous one.

def test_create(lab: Lab) -> None:
    with ArgvWatch(list(PASSWORDS.values())) as watch:
        res = lab.module(declared(lab), "--diff")
    assert not res.get("failed"), res
    assert watch.found == [] and watch.scans > 10
    assert res["changed"] is True
    assert sorted((c["name"], c["mechanism"]) for c in res["created"]) == [
        (lab.name("app"), "SCRAM-SHA-512"), (lab.name("ingest"), "SCRAM-SHA-256"),
        (lab.name("ingest"), "SCRAM-SHA-512")]
    assert res["updated"] == [] and res["unchanged"] == []
    assert len(res["commands"]) == 3 and all("--add-config-file" in c for c in res["commands"])
    assert not any(Path(c[-1]).exists() for c in res["commands"])  # the credential files are gone
    assert lab.described() == {lab.name("app"): {"SCRAM-SHA-512": 8192},
                               lab.name("ingest"): {"SCRAM-SHA-512": 4096, "SCRAM-SHA-256": 8192}}
    assert lab.authenticates(lab.name("app"), PASSWORDS["app"])
    assert lab.authenticates(lab.name("ingest"), PASSWORDS["ingest"])
    no_password_anywhere(lab, res, *PASSWORDS.values())
    mode = lab.state.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    state = json.loads(lab.state.read_text())
    assert set(state["credentials"]) == {lab.name("app"), lab.name("ingest")}
    assert not any(p in lab.state.read_text() for p in PASSWORDS.values())
    # Kafka's other users (the admin at least) are reported, not touched.
    assert res["undeclared"] and not any(u.startswith(lab.prefix) for u in res["undeclared"])


def test_rerun_changes_nothing(lab: Lab) -> None:
    state_before = lab.state.read_text()
    res = lab.module(declared(lab))
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert res["created"] == [] and res["updated"] == [] and res["commands"] == []
    assert len(res["unchanged"]) == 3
    assert lab.state.read_text() == state_before


def test_check_mode_reports_and_changes_nothing(lab: Lab) -> None:
    state_before = lab.state.read_text()
    res = lab.module(declared(lab, app_password="App-pw-NEW-2"), "--check", "--diff")
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert res["commands"] == []
    assert res["updated"] == [{"name": lab.name("app"), "mechanism": "SCRAM-SHA-512", "iterations": 8192,
                               "reason": "password changed"}]
    assert "%s SCRAM-SHA-512 iterations=8192 (password set)" % lab.name("app") in res["diff"]["after"]
    no_password_anywhere(lab, res, "App-pw-NEW-2", PASSWORDS["app"])
    assert lab.state.read_text() == state_before
    assert lab.authenticates(lab.name("app"), PASSWORDS["app"])
    assert not lab.authenticates(lab.name("app"), "App-pw-NEW-2")


def test_change_password(lab: Lab) -> None:
    with ArgvWatch(["App-pw-NEW-2"]) as watch:
        res = lab.module(declared(lab, app_password="App-pw-NEW-2"), "--diff")
    assert not res.get("failed"), res
    assert watch.found == []
    assert res["changed"] is True
    assert [(u["name"], u["reason"]) for u in res["updated"]] == [(lab.name("app"), "password changed")]
    assert len(res["unchanged"]) == 2
    no_password_anywhere(lab, res, "App-pw-NEW-2", PASSWORDS["app"])
    assert lab.authenticates(lab.name("app"), "App-pw-NEW-2")
    assert not lab.authenticates(lab.name("app"), PASSWORDS["app"])
    assert lab.module(declared(lab, app_password="App-pw-NEW-2"))["changed"] is False


def test_change_iterations(lab: Lab) -> None:
    res = lab.module(declared(lab, app_password="App-pw-NEW-2", ingest_iterations=16384))
    assert not res.get("failed"), res
    assert [(u["name"], u["mechanism"], u["reason"]) for u in res["updated"]] == [
        (lab.name("ingest"), "SCRAM-SHA-512", "iterations 4096 -> 16384")]
    assert lab.described()[lab.name("ingest")] == {"SCRAM-SHA-512": 16384, "SCRAM-SHA-256": 8192}
    assert lab.authenticates(lab.name("ingest"), PASSWORDS["ingest"])


def test_lost_state_sets_passwords_again_once(lab: Lab) -> None:
    lab.state.unlink()
    users = declared(lab, app_password="App-pw-NEW-2", ingest_iterations=16384)
    res = lab.module(users)
    assert not res.get("failed"), res
    assert len(res["updated"]) == 3 and all("no fingerprint recorded" in u["reason"] for u in res["updated"])
    assert lab.module(users)["changed"] is False
    assert lab.authenticates(lab.name("app"), "App-pw-NEW-2")


def test_bad_password_is_refused_before_any_call(lab: Lab) -> None:
    res = lab.module([{"name": lab.name("bad"), "password": "has,comma"}])
    assert res.get("failed") is True
    assert "characters that Kafka's SCRAM tooling or client JAAS configs cannot carry (',')" in res["msg"]
    assert "no user was changed" in res["msg"]
    assert "has,comma" not in json.dumps(res) and "has,comma" not in lab.last_output
    assert lab.name("bad") not in lab.described()


def test_second_mechanism_at_kafkas_maximum_iterations(lab: Lab) -> None:
    res = lab.module([{"name": lab.name("app"), "password": "App-pw-NEW-2", "iterations": 16384,
                       "mechanism": "SCRAM-SHA-256"}, {"name": lab.name("app"), "password": "App-pw-NEW-2"}])
    assert not res.get("failed"), res  # 16384 is Kafka's maximum: accepted
    assert res["created"] == [{"name": lab.name("app"), "mechanism": "SCRAM-SHA-256", "iterations": 16384}]


def test_kafka_error_is_reported_clearly(lab: Lab, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.properties"
    wrong.write_text(Path(ADMIN_CONFIG).read_text().replace('password="', 'password="x-wrong-', 1))
    res = lab.module(declared(lab), command_config=str(wrong))
    assert res.get("failed") is True
    assert res["msg"].startswith("cannot read the SCRAM users: the client in command_config could not authenticate")
    assert "SaslAuthenticationException" in res["msg"]
    no_password_anywhere(lab, res, *PASSWORDS.values())
