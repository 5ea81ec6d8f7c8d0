"""The monitoring role's configuration, through Ansible itself and Prometheus's own promtool; nothing is installed.

- Rules: a tiny playbook (connection local) runs the role's validate tasks and renders the alerting rules with the
  role's defaults (templates/kraftwerk.rules.yml.j2); `promtool test rules` runs rules_test.yml against them, which
  has a firing and a quiet case for every alert. A test checks that every alert of the rendered file has both.
- Configuration: prometheus.yml with targets like playbooks/vars/monitoring.yml's passes `promtool check config`,
  and carries the contract's labels (docs/monitoring-contract.md); the blackbox modules and the Alertmanager
  configuration are rendered and read back.
- Validation: bad variables fail in the role's validate entry point with a message naming the variable.

promtool comes from lab/fetch-promtool (Debian's prometheus package, unpacked into ~/.cache/kraftwerk/promtool, not
installed). Without one the promtool tests are skipped with the reason, except under KRAFTWERK_PROMTOOL_REQUIRED=1
(or CI=true), where they fail. Run: .venv/bin/pytest -q roles/monitoring/tests
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLE = Path(__file__).resolve().parent.parent
ROOT = ROLE.parent.parent
TESTS = Path(__file__).resolve().parent
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"


_spec = importlib.util.spec_from_file_location("promtool_support", ROOT / "tests" / "promtool_support.py")
assert _spec is not None and _spec.loader is not None
promtool_support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(promtool_support)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of promtool (looked up once, when a test first needs it); skipped or failed without one."""
    return str(promtool_support.require_promtool())


RENDER_PLAYBOOK = """\
- name: Render the monitoring role's templates into a directory
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Validate the variables
      ansible.builtin.import_role:
        name: monitoring
        tasks_from: validate
    - name: Render the files
      ansible.builtin.template:
        src: "{{ mon_role }}/templates/{{ item.src }}"
        dest: "{{ mon_out }}/{{ item.dest }}"
        mode: "0600"
      loop:
        - {src: kraftwerk.rules.yml.j2, dest: kraftwerk.rules.yml}
        - {src: prometheus.yml.j2, dest: prometheus.yml}
        - {src: blackbox.yml.j2, dest: blackbox.yml}
        - {src: alertmanager.yml.j2, dest: alertmanager.yml}
        - {src: prometheus.default.j2, dest: prometheus.default}
        - {src: prometheus-alertmanager.default.j2, dest: prometheus-alertmanager.default}
        - {src: prometheus-blackbox-exporter.default.j2, dest: prometheus-blackbox-exporter.default}
"""

VALIDATE_PLAYBOOK = """\
- name: Validate the monitoring variables only
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Validate the monitoring role's variables
      ansible.builtin.include_role:
        name: monitoring
        tasks_from: validate
"""

# Targets as playbooks/vars/monitoring.yml derives them (two app instances on one host, dedicated ports).
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"
SAMPLE = {
    "monitoring_listen_address": "192.0.2.31",
    "monitoring_scrape_targets": {
        "kafka": [{"instance": f"kafka{i}", "address": f"192.0.2.1{i}:7071"} for i in (1, 2, 3)],
        "node": [{"instance": "kafka1", "address": "192.0.2.11:9100"}, {"instance": "edge1", "address": "192.0.2.31:9100"}],
        "producer": [{"instance": "app1", "address": f"192.0.2.21:{p}", "labels": {"port": str(p)}} for p in (8100, 8101)],
        "edge": [{"instance": "edge1", "address": "192.0.2.31:9145"}],
    },
    "monitoring_tls_targets": [
        {"instance": "edge1", "address": "192.0.2.31:443", "probe": "edge"},
        {"instance": "kafka1", "address": "192.0.2.11:9095", "probe": "kafka"},
        {"instance": "kafka2", "address": "[2001:db8::12]:9095", "probe": "kafka"},
    ],
    "monitoring_tls_ca_certificates": {"kafka": CA_PEM, "edge": ""},
}


def run_playbook(tmp_path: Path, playbook: str, extra: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(playbook)
    inventory = {"all": {"hosts": {"mon1": {"ansible_connection": "local", "ansible_host": "192.0.2.31",
                                            "ansible_python_interpreter": sys.executable}}}}
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"), "--limit", "mon1",
         "-e", "@" + str(tmp_path / "vars.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


def render(tmp_path: Path, **variables: Any) -> Path:
    """The role's files for these variables (else its defaults) in tmp_path/out; prometheus.yml names the rules
    file there rather than /etc/prometheus."""
    out = tmp_path / "out"
    out.mkdir()
    extra = {"mon_role": str(ROLE), "mon_out": str(out), "_monitoring_rules_file": str(out / "kraftwerk.rules.yml"),
             **variables}
    result = run_playbook(tmp_path, RENDER_PLAYBOOK.replace("hosts: localhost", "hosts: mon1"), extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def promtool_run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def alerts_of(rules_file: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- The rules ---------------------------------------------------------------------------------------------------

# One worker runs the whole file under pytest-xdist (./kw unit: --dist loadgroup): the render fixtures run once.
pytestmark = pytest.mark.xdist_group("monitoring-render")


@pytest.fixture(scope="module")
def default_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules rendered with the role's defaults, and the unit tests beside them."""
    out = render(tmp_path_factory.mktemp("rules"))
    shutil.copy(TESTS / "rules_test.yml", out / "rules_test.yml")
    return out


def test_promtool_test_rules_passes_for_every_alert(promtool: str, default_rules: Path) -> None:
    check = promtool_run(promtool, "check", "rules", "kraftwerk.rules.yml", cwd=default_rules)
    assert check.returncode == 0, check.stdout + check.stderr
    result = promtool_run(promtool, "test", "rules", "rules_test.yml", cwd=default_rules)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case(default_rules: Path) -> None:
    """rules_test.yml covers every alert of the rendered rules, each with a case where it fires and one where not."""
    names = {rule["alert"] for rule in alerts_of(default_rules / "kraftwerk.rules.yml")}
    assert names == {"KafkaUnderReplicatedPartitions", "KafkaUnderMinIsrPartitions", "KafkaOfflinePartitions",
                     "KafkaNoActiveController", "KafkaConsumerLagHigh", "EdgeHigh5xxRate",
                     "TLSCertificateExpiringSoon", "TLSProbeFailed", "TargetDown"}
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load((TESTS / "rules_test.yml").read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert set(cases) == names, f"alerts without a test: {sorted(names - set(cases))}; unknown: {sorted(set(cases) - names)}"
    assert {name for name, kinds in cases.items() if kinds != {True, False}} == set(), cases


def test_every_alert_has_severity_summary_and_description(default_rules: Path) -> None:
    for rule in alerts_of(default_rules / "kraftwerk.rules.yml"):
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule
        assert "\n" not in rule["annotations"]["summary"], rule


def test_fors_and_thresholds_come_from_the_variables(tmp_path: Path) -> None:
    out = render(tmp_path, monitoring_alert_urp_for="30s", monitoring_alert_target_down_for="15s",
                 monitoring_alert_consumer_lag_threshold=5, monitoring_alert_edge_5xx_ratio=0.25,
                 monitoring_alert_edge_5xx_window="2m", monitoring_alert_tls_expiry_days=30)
    rules = {rule["alert"]: rule for rule in alerts_of(out / "kraftwerk.rules.yml")}
    assert rules["KafkaUnderReplicatedPartitions"]["for"] == "30s"
    assert rules["TargetDown"]["for"] == "15s"
    assert rules["KafkaConsumerLagHigh"]["expr"] == "sum(max by (topic, partition) (kraftwerk_consumer_lag)) > 5"
    assert rules["EdgeHigh5xxRate"]["expr"].endswith("> 0.25")
    assert rules["EdgeHigh5xxRate"]["expr"].count("[2m]") == 2
    assert "more than 25%" in rules["EdgeHigh5xxRate"]["annotations"]["description"]
    assert rules["TLSCertificateExpiringSoon"]["expr"].endswith("< 30 * 86400")


# --- prometheus.yml, blackbox.yml, alertmanager.yml ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("sample"), **SAMPLE)


def test_prometheus_config_passes_promtool(promtool: str, sample: Path) -> None:
    result = promtool_run(promtool, "check", "config", str(sample / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_jobs_carry_the_contracts_labels(sample: Path) -> None:
    config = yaml.safe_load((sample / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == ["alertmanager", "edge", "kafka", "node", "producer", "prometheus", "tls"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["192.0.2.31:9093"]
    # The role's own Prometheus and Alertmanager, on the listen address.
    assert jobs["prometheus"]["static_configs"] == [
        {"targets": ["192.0.2.31:9090"], "labels": {"host": "mon1", "instance": "mon1"}}]
    assert jobs["alertmanager"]["static_configs"][0]["targets"] == ["192.0.2.31:9093"]
    assert [(c["targets"], c["labels"]) for c in jobs["kafka"]["static_configs"]] == [
        ([f"192.0.2.1{i}:7071"], {"host": f"kafka{i}", "instance": f"kafka{i}"}) for i in (1, 2, 3)]
    # Two instances of one host: same instance and host, told apart by their port.
    assert [(c["targets"], c["labels"]) for c in jobs["producer"]["static_configs"]] == [
        (["192.0.2.21:8100"], {"host": "app1", "instance": "app1", "port": "8100"}),
        (["192.0.2.21:8101"], {"host": "app1", "instance": "app1", "port": "8101"})]
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == ("/probe" if job["job_name"] == "tls" else "/metrics")


def test_tls_probes_go_through_the_blackbox_exporter(sample: Path) -> None:
    config = yaml.safe_load((sample / "prometheus.yml").read_text())
    tls = next(job for job in config["scrape_configs"] if job["job_name"] == "tls")
    assert [c["labels"] for c in tls["static_configs"]] == [
        {"host": "edge1", "instance": "edge1", "probe": "edge", "target": "192.0.2.31:443"},
        {"host": "kafka1", "instance": "kafka1", "probe": "kafka", "target": "192.0.2.11:9095"},
        {"host": "kafka2", "instance": "kafka2", "probe": "kafka", "target": "[2001:db8::12]:9095"}]
    assert tls["relabel_configs"] == [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["probe"], "target_label": "__param_module", "replacement": "tls_${1}"},
        {"target_label": "__address__", "replacement": "127.0.0.1:9115"}]
    blackbox = yaml.safe_load((sample / "blackbox.yml").read_text())
    # The Kafka probe trusts the cluster's CA; the edge's (no CA given) the system CAs.
    assert blackbox == {"modules": {
        "tls_edge": {"prober": "tcp", "timeout": "5s", "tcp": {"tls": True}},
        "tls_kafka": {"prober": "tcp", "timeout": "5s",
                      "tcp": {"tls": True, "tls_config": {"ca_file": "/etc/prometheus/tls/kafka-ca.crt"}}}}}


def test_daemons_listen_where_the_contract_says(sample: Path) -> None:
    assert (sample / "prometheus.default").read_text().splitlines()[-1] == (
        'ARGS="--config.file=/etc/prometheus/prometheus.yml --web.listen-address=192.0.2.31:9090'
        ' --storage.tsdb.retention.time=15d"')
    assert (sample / "prometheus-alertmanager.default").read_text().splitlines()[-1] == (
        'ARGS="--config.file=/etc/prometheus/alertmanager.yml --web.listen-address=192.0.2.31:9093'
        ' --cluster.listen-address="')
    assert (sample / "prometheus-blackbox-exporter.default").read_text().splitlines()[-1] == (
        'ARGS="--config.file=/etc/prometheus/blackbox.yml --web.listen-address=127.0.0.1:9115"')


def test_alertmanager_without_a_webhook_only_keeps_the_alerts(sample: Path) -> None:
    config = yaml.safe_load((sample / "alertmanager.yml").read_text())
    assert config["route"]["receiver"] == "default"
    assert config["receivers"] == [{"name": "default"}]


def test_alertmanager_with_a_webhook_sends_there(tmp_path: Path) -> None:
    out = render(tmp_path, monitoring_alertmanager_webhook_url="https://hooks.example.com/alert?token=a%20b&c=1")
    config = yaml.safe_load((out / "alertmanager.yml").read_text())
    assert config["receivers"] == [{"name": "default", "webhook_configs": [
        {"url": "https://hooks.example.com/alert?token=a%20b&c=1", "send_resolved": True}]}]


def test_retention_size_and_extra_flags(tmp_path: Path) -> None:
    out = render(tmp_path, monitoring_prometheus_retention_time="30d", monitoring_prometheus_retention_size="10GB",
                 monitoring_prometheus_extra_args=["--web.external-url=https://prom.example.com/"],
                 monitoring_listen_address="2001:db8::5")
    assert (out / "prometheus.default").read_text().splitlines()[-1] == (
        'ARGS="--config.file=/etc/prometheus/prometheus.yml --web.listen-address=[2001:db8::5]:9090'
        ' --storage.tsdb.retention.time=30d --storage.tsdb.retention.size=10GB'
        ' --web.external-url=https://prom.example.com/"')


# --- Validation ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("variables", "message"), [
    ({"monitoring_prometheus_port": 70000}, "monitoring_prometheus_port must be a port number"),
    ({"monitoring_listen_address": "0.0.0.0 --web.enable-admin-api"}, "monitoring_listen_address must be an IP address"),
    ({"monitoring_alert_urp_for": "5 minutes"}, "monitoring_alert_urp_for must be a Prometheus duration"),
    ({"monitoring_prometheus_retention_size": "10 GB"}, "monitoring_prometheus_retention_size must be empty or a size"),
    ({"monitoring_prometheus_extra_args": ["--web.enable-lifecycle --x"]}, 'must be one "--flag"'),
    ({"monitoring_prometheus_extra_args": ["--web.listen-address=0.0.0.0:9090"]}, "is set by the role"),
    ({"monitoring_alert_edge_5xx_ratio": 5}, "monitoring_alert_edge_5xx_ratio must be a share between 0 and 1"),
    ({"monitoring_alert_consumer_lag_threshold": "lots"}, "monitoring_alert_consumer_lag_threshold must be a whole"),
    ({"monitoring_alertmanager_webhook_url": "ftp://x"}, "its value is not shown"),
    ({"monitoring_scrape_targets": {"tls": []}}, 'not a job name'),
    ({"monitoring_scrape_targets": {"kafka": [{"instance": "k1", "address": "10.0.0.1"}]}}, 'address must be "host:port"'),
    ({"monitoring_scrape_targets": {"kafka": [{"address": "10.0.0.1:7071"}]}}, "every target needs an instance"),
    ({"monitoring_scrape_targets": {"kafka": [{"instance": "k1", "address": "10.0.0.1:7071", "port": 1}]}},
     'unknown key "port"'),
    ({"monitoring_scrape_targets": {"kafka": [{"instance": "k1", "address": "10.0.0.1:7071",
                                               "labels": {"instance": "x"}}]}}, "is not a label a target may set"),
    ({"monitoring_tls_targets": [{"instance": "k1", "address": "10.0.0.1:9095", "probe": "kafka-ca"}]},
     "probe must be a name"),
    ({"monitoring_tls_ca_certificates": {"kafka": "not a certificate"}}, "must be a PEM certificate"),
])
def test_bad_variables_fail_with_a_message(tmp_path: Path, variables: dict[str, Any], message: str) -> None:
    result = run_playbook(tmp_path, VALIDATE_PLAYBOOK.replace("hosts: localhost", "hosts: mon1"), variables)
    assert result.returncode != 0, result.stdout
    assert message in result.stdout, result.stdout + result.stderr
    # A webhook URL may hold a token: never in the output.
    if "monitoring_alertmanager_webhook_url" in variables:
        assert "ftp://x" not in result.stdout


def test_the_defaults_and_the_sample_pass_validation(tmp_path: Path) -> None:
    result = run_playbook(tmp_path, VALIDATE_PLAYBOOK.replace("hosts: localhost", "hosts: mon1"), SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
