"""Bad variables fail before any host is touched, with a message that says what to fix.

Each case runs the real site.yml against an inventory whose hosts point at a closed port on 127.0.0.1:
if validation ever let a bad value through, the play would try to connect, fail with "unreachable" and
the expected message would be missing, so the test fails rather than passing by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The ansible-playbook of the venv running the tests (.venv/bin/pytest works without activating it), else PATH's.
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"


# What a real inventory takes from its vault (made-up values: these hosts are never reached).
SECRETS = {"kafka_admin_password": "admin-password-0123", "kafka_broker_password": "broker-password-0123",
           "kraftwerk_producer_kafka_password": "producer-password-0123",
           "kraftwerk_consumer_kafka_password": "consumer-password-0123",
           "kraftwerk_api_keys": ["api-key-0123456789abcdef"]}
SECURE_LISTENERS = [
    {"name": "CLIENT", "port": 9095, "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "client": True},
    {"name": "INTERNAL", "port": 9094, "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "inter_broker": True},
    {"name": "CONTROLLER_SSL", "port": 9096, "protocol": "SSL", "controller": True},
]


def listeners(**changes: dict[str, object]) -> list[dict[str, object]]:
    """The default listeners with some fields changed, by listener name."""
    return [dict(item, **changes.get(str(item["name"]), {})) for item in SECURE_LISTENERS]


def write_inventory(tmp_path: Path, kafka: list[str], controllers: list[str] | None = None,
                    apps: bool = False, host_vars: dict[str, dict[str, object]] | None = None) -> Path:
    """Kafka hosts (and dedicated controllers); with apps, also app1 (producer and consumer) and edge1 (nginx and
    monitoring, as in the lab)."""
    others = ["app1", "edge1"] if apps else []
    hosts = {h: {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh",
                 "kafka_advertised_host": f"{h}.kraftwerk.invalid", **(host_vars or {}).get(h, {})}
             for h in kafka + (controllers or []) + others}
    children: dict[str, object] = {"kafka": {"hosts": {h: {} for h in kafka}}}
    if controllers:
        children["kafka_controller"] = {"hosts": {h: {} for h in controllers}}
    if apps:
        children["producer"] = {"hosts": {"app1": {}}}
        children["consumer"] = {"hosts": {"app1": {}}}
        children["nginx"] = {"hosts": {"edge1": {}}}
        children["monitoring"] = {"hosts": {"edge1": {}}}
    inv = {"all": {"hosts": hosts, "children": children,
                   "vars": {"ansible_ssh_common_args": "-o ConnectTimeout=1", **SECRETS}}}
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps(inv))
    return path


# ANSIBLE_STRATEGY=linear: these runs stop at validation or at unreachable hosts, where Mitogen (ansible.cfg's
# kraftwerk_linear) only adds its start-up: one case took 14-16 s with it and 6-7 s without. Molecule keeps Mitogen.
def ansible_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_STRATEGY="linear",
                ANSIBLE_STDOUT_CALLBACK="default", **extra)


def run_site(inventory: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = ansible_env()
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(ROOT / "site.yml"), "-e", json.dumps(extra)],
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
    ("bad checksum", THREE, None, {"kafka_archive_sha256": "dd4399816e67"},
     "kafka_archive_sha256 must be the 64-hex-digit sha256"),
    ("unsupported version", THREE, None, {"kafka_version": "3.7.2", "kafka_install_method": "maven"},
     "Kafka 3.7.2 is not a version the role supports: kafka_version must be one of 3.8.1, 3.9.1"),
    ("archive of a version whose archive is not pinned", THREE, None, {"kafka_version": "3.8.1"},
     "the role pins no sha256 for kafka_2.13-3.8.1.tgz (pinned: 3.9.1 for Scala 2.13). Use kafka_install_method: maven"),
    ("downgrade switch not a boolean", THREE, None, {"kafka_allow_downgrade": "maybe"},
     "kafka_allow_downgrade must be true or false"),
    ("bad listener port", THREE, None, {"kafka_listeners": listeners(CLIENT={"port": 70000})},
     "kafka_listeners[CLIENT].port must be a number in 1-65535"),
    ("listener ports clash", THREE, None, {"kafka_listeners": listeners(CLIENT={"port": 9094})},
     "kafka_listeners: ports must be distinct"),
    ("unknown listener protocol", THREE, None, {"kafka_listeners": listeners(CLIENT={"protocol": "TLS"})},
     "kafka_listeners[CLIENT].protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("SCRAM between controllers", THREE, None,
     {"kafka_listeners": listeners(CONTROLLER_SSL={"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"})},
     "the controller listener must be SSL (mutual TLS) or PLAINTEXT"),
    ("two client listeners", THREE, None, {"kafka_listeners": listeners(INTERNAL={"client": True})},
     "exactly one listener must have client: true"),
    ("SASL without a mechanism", THREE, None, {"kafka_listeners": listeners(CLIENT={"sasl_mechanism": "PLAIN"})},
     "kafka_listeners[CLIENT].sasl_mechanism must be SCRAM-SHA-512 or SCRAM-SHA-256"),
    ("listener name with a newline", THREE, None, {"kafka_listeners": listeners(CLIENT={"name": "CLIENT\nX"})},
     "must be letters, digits and"),
    ("admin password missing", THREE, None, {"kafka_admin_password": ""},
     "kafka_admin_password (password of SCRAM user admin) must be set"),
    ("password with a comma", THREE, None, {"kafka_broker_password": "broker,password=x"},
     "kafka_broker_password (password of SCRAM user kafka-broker) must be set"),
    ("password with a quote", THREE, None, {"kafka_admin_password": 'admin-pass"word-1'},
     "kafka_admin_password (password of SCRAM user admin) must be set"),
    ("app password missing", THREE, None, {"kraftwerk_consumer_kafka_password": ""},
     "kafka_scram_users[1].password (password of SCRAM user kraftwerk-consumer) must be set"),
    ("backup password too short", THREE, None, {"kraftwerk_backup_kafka_password": "short"},
     "kafka_scram_users[2].password (password of SCRAM user kraftwerk-backup) must be set"),
    ("certificate without its key", THREE, None, {"kafka_tls_certificate": "-----BEGIN CERTIFICATE-----"},
     "kafka_tls_certificate and kafka_tls_private_key go together"),
    ("owned TLS key in the escape hatch", THREE, None,
     {"kafka_extra_properties": {"listener.name.client.ssl.client.auth": "none"}},
     "kafka_extra_properties may not set listener.name.client.ssl.client.auth"),
    ("authorizer off through the escape hatch", THREE, None,
     {"kafka_extra_properties": {"allow.everyone.if.no.acl.found": "true"}},
     "kafka_extra_properties may not set allow.everyone.if.no.acl.found"),
    ("advertised wildcard", THREE, None, {"kafka_advertised_host": "0.0.0.0"}, "Bad listener"),
    ("owned key in the escape hatch", THREE, None, {"kafka_extra_properties": {"node.id": 7}},
     "kafka_extra_properties may not set node.id"),
    ("min ISR above replication", THREE, None, {"kafka_min_insync_replicas": 4},
     "min.insync.replicas"),
    ("topic shrink below zero", THREE, None,
     {"kafka_topics_list": [{"name": "t", "partitions": 0, "replication_factor": 3}]}, "partitions"),
    ("topic replication above brokers", THREE, None,
     {"kafka_topics_list": [{"name": "t", "partitions": 3, "replication_factor": 5}]}, "replication"),
    # Values rendered into the systemd unit: a line break would add a line such as ExecStartPre=+... (run as root).
    ("newline in kafka_heap_opts", THREE, None, {"kafka_heap_opts": "-Xmx1g\nExecStartPre=+/bin/sh -c id"},
     "kafka_heap_opts must be one line"),
    ("carriage return in kafka_jvm_performance_opts", THREE, None,
     {"kafka_jvm_performance_opts": "-server\rExecStartPre=+/bin/true"}, "kafka_jvm_performance_opts must be one line"),
    ("newline in kafka_jvm_extra_opts", THREE, None, {"kafka_jvm_extra_opts": "-Dx=1\nExecStartPre=+/bin/true"},
     "kafka_jvm_extra_opts must be one line"),
    ("shell syntax in kafka_jvm_extra_opts", THREE, None, {"kafka_jvm_extra_opts": "-Dx=$(id)"},
     "kafka_jvm_extra_opts may not contain"),
    ("newline in kafka_cli_heap_opts", THREE, None, {"kafka_cli_heap_opts": "-Xmx256m\nid"},
     "kafka_cli_heap_opts must be one line"),
    ("newline in kafka_java_bin", THREE, None, {"kafka_java_bin": "/usr/bin/java\nExecStartPre=+/bin/true"},
     "kafka_java_bin must be an absolute path"),
    ("relative kafka_config_dir", THREE, None, {"kafka_config_dir": "etc/kafka"},
     "kafka_config_dir must be an absolute path"),
    ("newline in kafka_user", THREE, None, {"kafka_user": "kafka\nExecStartPre=+/bin/true"},
     "kafka_user must be a system account name"),
    ("space in a log dir", THREE, None, {"kafka_log_dirs": ["/var/lib/kafka data"]},
     'kafka_log_dirs: "/var/lib/kafka data" must be an absolute path'),
    ("newline in kafka_limit_nofile", THREE, None, {"kafka_limit_nofile": "100000\nExecStartPre=+/bin/true"},
     "kafka_limit_nofile"),
    ("newline in kafka_compression_type", THREE, None, {"kafka_compression_type": "lz4\nnode.id=9"},
     "kafka_compression_type must be one of"),
    ("newline in kafka_cluster_name", THREE, None, {"kafka_cluster_name": "prod\nnode.id=9"},
     "kafka_cluster_name may only hold"),
    ("trailing newline in kafka_advertised_host", THREE, None, {"kafka_advertised_host": "k1.kraftwerk.invalid\n"},
     "Bad listener"),
    # kafka_extra_properties: keys are compared normalised and must be plain; values stay on one line.
    ("owned key with a trailing space", THREE, None, {"kafka_extra_properties": {"log.dirs ": "/tmp/x"}},
     "kafka_extra_properties may not set log.dirs"),
    ("owned key in another case", THREE, None, {"kafka_extra_properties": {"Node.Id": 7}},
     "kafka_extra_properties may not set node.id"),
    ("key with a separator", THREE, None, {"kafka_extra_properties": {"log.dirs=/tmp/x#": "1"}},
     'kafka_extra_properties key "log.dirs=/tmp/x#" is not a plain property name'),
    ("key with a newline", THREE, None, {"kafka_extra_properties": {"x\nlog.dirs": "/tmp/x"}},
     "is not a plain property name"),
    ("key starting a comment", THREE, None, {"kafka_extra_properties": {"!x": "1"}},
     'kafka_extra_properties key "!x" is not a plain property name'),
    ("value with a newline", THREE, None, {"kafka_extra_properties": {"message.max.bytes": "2097152\nnode.id=7"}},
     'kafka_extra_properties["message.max.bytes"] must be one line'),
    ("value with a carriage return", THREE, None, {"kafka_extra_properties": {"message.max.bytes": "1\rnode.id=7"}},
     'kafka_extra_properties["message.max.bytes"] must be one line'),
    ("value continued on the next line", THREE, None, {"kafka_extra_properties": {"message.max.bytes": "1\\"}},
     'kafka_extra_properties["message.max.bytes"] may not end with a backslash'),
    # kafka_cluster_id: what kafka-storage random-uuid prints, or empty.
    ("cluster id too short", THREE, None, {"kafka_cluster_id": "MkU3OEVBNTcw"},
     'kafka_cluster_id "MkU3OEVBNTcw" must be a Kafka cluster id'),
    ("cluster id with bad characters", THREE, None, {"kafka_cluster_id": "MkU3OEVBNTcwNTJENDM2Q!"},
     'kafka_cluster_id "MkU3OEVBNTcwNTJENDM2Q!" must be a Kafka cluster id'),
    ("cluster id in standard base64", THREE, None, {"kafka_cluster_id": "MkU3OEVBNTcwNTJENDM+Qg"},
     "must be a Kafka cluster id"),
    ("cluster id too long", THREE, None, {"kafka_cluster_id": "MkU3OEVBNTcwNTJENDM2QgAA"},
     "must be a Kafka cluster id"),
    ("cluster id not 16 bytes", THREE, None, {"kafka_cluster_id": "MkU3OEVBNTcwNTJENDM2Qh"},
     "must be a Kafka cluster id"),
    ("cluster id with a trailing newline", THREE, None, {"kafka_cluster_id": "MkU3OEVBNTcwNTJENDM2Qg\n"},
     "must be a Kafka cluster id"),
    ("cluster id read as an option", THREE, None, {"kafka_cluster_id": "-kU3OEVBNTcwNTJENDM2Qg"},
     "must be a Kafka cluster id"),
]

# The apps and the edge are validated before any host is touched too (playbooks/validate.yml).
APP_CASES = [
    ("newline in an nginx server name", {"nginx_server_names": ["edge.example.com\nlocation /x { return 200; }"]},
     "is not a server name"),
    ("semicolon in an nginx server name", {"nginx_server_names": ["edge.example.com;"]},
     'nginx_server_names: "edge.example.com;" is not a server name'),
    ("brace in an nginx server name", {"nginx_server_names": ["edge{"]},
     'nginx_server_names: "edge{" is not a server name'),
    ("newline in a rate", {"kraftwerk_edge_api_rate": "200r/s;\nlimit_req_zone x"},
     "nginx_rate_limits.kraftwerk_api needs a rate"),
    ("quote in the CSP", {"nginx_content_security_policy": "default-src 'self'\" always; add_header X 1; #"},
     "nginx_content_security_policy may not contain"),
    ("brace in a location path", {"nginx_locations": [{"path": "/x { }", "status": 204}]},
     "the path must start with"),
    ("semicolon in a metrics allow", {"kraftwerk_edge_metrics_allow": ["10.0.0.0/8; allow all"]},
     "must be an IP address or CIDR"),
    ("extra locations not a list", {"kraftwerk_edge_extra_locations": "/x/"},
     "kraftwerk_edge_extra_locations a list of locations"),
    ("brace in an extra location path", {"kraftwerk_edge_extra_locations": [{"path": "/x { }", "status": 204}]},
     "the path must start with"),
    ("extra location to an undeclared upstream", {"kraftwerk_edge_extra_locations": [{"path": "/x/", "upstream": "nope"}]},
     "its upstream / rate_limit must be declared"),
    ("space in an extra upstream server", {"kraftwerk_edge_extra_upstreams": {"x": ["10.0.0.1:80; server y"]}},
     'must be "address:port"'),
    ("standby server not in its upstream", {"kraftwerk_edge_extra_upstreams": {"x": ["10.0.0.1:80"]},
                                            "kraftwerk_edge_extra_upstream_backup": {"x": ["10.0.0.2:80"]}},
     'nginx_upstream_backup.x must list servers of nginx_upstreams.x (["10.0.0.1:80"])'),
    ("every server of an upstream on standby", {"kraftwerk_edge_extra_upstreams": {"x": ["10.0.0.1:80"]},
                                                "kraftwerk_edge_extra_upstream_backup": {"x": ["10.0.0.1:80"]}},
     "nginx_upstream_backup.x makes every server a standby"),
    ("standby on a hashed upstream", {"kraftwerk_producer_standby": False,
                                      "kraftwerk_edge_extra_upstream_backup": {"kraftwerk_producer": ["127.0.0.1:8101"]}},
     "NGINX can not hash an upstream with backup servers"),
    ("retry flag of a location not a boolean",
     {"kraftwerk_edge_extra_locations": [{"path": "/x/", "upstream": "kraftwerk_producer", "retry_non_idempotent": "yes"}]},
     'retry_non_idempotent must be true or false; got "yes"'),
    ("producer standby not a boolean", {"kraftwerk_producer_standby": "sometimes"},
     "kraftwerk_producer_standby true or false"),
    ("newline in pyapp_unit_extra", {"pyapp_unit_extra": ["ReadWritePaths=/x\nExecStartPre=+/bin/sh"]},
     "must be one Name=value line"),
    ("section header in pyapp_unit_extra", {"pyapp_unit_extra": ["[Install]"]},
     'pyapp_unit_extra: "[Install]" must be one Name=value line'),
    ("newline in pyapp_entrypoint_args", {"pyapp_entrypoint_args": ["--x\nExecStartPre=+/bin/sh"]},
     "must be one word"),
    ("space in pyapp_entrypoint_args", {"pyapp_entrypoint_args": ["--log-level info"]},
     'pyapp_entrypoint_args: "--log-level info" must be one word'),
    ("newline in pyapp_description", {"pyapp_description": "x\nExecStartPre=+/bin/sh"},
     "pyapp_description must be one line"),
    ("trailing newline in pyapp_name", {"pyapp_name": "kraftwerk-producer\n"}, "pyapp needs pyapp_name"),
    ("newline in pyapp_limit_nofile", {"pyapp_limit_nofile": "1\nExecStartPre=+/bin/sh"},
     "pyapp_limit_nofile must be a whole number"),
    # Monitoring (playbooks/monitoring.yml): the exporters' and Prometheus's command lines and configuration.
    ("node exporter port out of range", {"node_exporter_port": 70000}, "node_exporter_port must be a port number"),
    ("space in a node exporter flag", {"node_exporter_extra_args": ["--collector.systemd --web.listen-address=:1"]},
     'must be one "--flag" or "--flag=value"'),
    ("space in the stub_status port", {"nginx_stub_status_port": "8080 --x"}, "nginx_stub_status_port must be a port"),
    ("semicolon in the response metrics allow", {"nginx_response_metrics_allow": ["10.0.0.0/8; allow all"]},
     'nginx_response_metrics_allow: "10.0.0.0/8; allow all" must be an IP address or CIDR'),
    ("alert for not a duration", {"monitoring_alert_urp_for": "5 minutes"},
     "monitoring_alert_urp_for must be a Prometheus duration"),
    ("5xx ratio as a percentage", {"monitoring_alert_edge_5xx_ratio": 5},
     "monitoring_alert_edge_5xx_ratio must be a share between 0 and 1"),
]


def assert_refused_before_any_host(res: subprocess.CompletedProcess[str], message: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    # Messages are wrapped in the task output: compare with whitespace folded.
    assert message in " ".join(out.split()), out
    assert "UNREACHABLE" not in out, "validation let the play reach the hosts:\n" + out
    assert "Gathering Facts" not in out, out


def assert_reaches_the_hosts(res: subprocess.CompletedProcess[str]) -> None:
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "UNREACHABLE" in out, out


@pytest.mark.parametrize(("kafka", "controllers", "extra", "message"),
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_fails_before_any_host(tmp_path: Path, kafka: list[str], controllers: list[str] | None,
                                         extra: dict[str, object], message: str) -> None:
    assert_refused_before_any_host(run_site(write_inventory(tmp_path, kafka, controllers), extra), message)


@pytest.mark.parametrize(("extra", "message"), [pytest.param(*c[1:], id=c[0]) for c in APP_CASES])
def test_bad_app_or_edge_input_fails_before_any_host(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    assert_refused_before_any_host(run_site(write_inventory(tmp_path, THREE, apps=True), extra), message)


def test_malformed_kept_cluster_id_fails_before_any_host(tmp_path: Path) -> None:
    """The id kept on the controller is checked like kafka_cluster_id, not first by kafka-storage on a host."""
    inventory = write_inventory(tmp_path, THREE)
    (tmp_path / "cluster-id").mkdir()
    (tmp_path / "cluster-id" / "kraftwerk").write_text("not-a-cluster-id\n")
    assert_refused_before_any_host(run_site(inventory, {}), '(kafka_cluster_id_file) holds "not-a-cluster-id"')


FOUR = ["k1", "k2", "k3", "k4"]
ROLE_CASES = [
    ("a fourth combined node", {}, "it needs an odd number"),
    ("roles not a list", {"k4": {"kafka_process_roles": "broker"}}, 'k4: kafka_process_roles must be a list such as [broker]'),
    ("unknown role", {"k4": {"kafka_process_roles": ["broker", "zookeeper"]}},
     'k4: kafka_process_roles ["broker", "zookeeper"] may only narrow the roles its groups give it (broker, controller)'),
    ("role given twice", {"k4": {"kafka_process_roles": ["broker", "broker"]}}, "may only narrow"),
    ("no broker left", {h: {"kafka_process_roles": ["controller"]} for h in ["k1", "k2", "k3"]}
     | {"k4": {"kafka_process_roles": ["controller"]}}, "the inventory has no broker"),
]


@pytest.mark.parametrize(("host_vars", "message"), [pytest.param(*c[1:], id=c[0]) for c in ROLE_CASES])
def test_bad_process_roles_fail_before_any_host(tmp_path: Path, host_vars: dict[str, dict[str, object]],
                                                message: str) -> None:
    assert_refused_before_any_host(run_site(write_inventory(tmp_path, FOUR, host_vars=host_vars), {}), message)


def test_controller_role_on_a_broker_of_dedicated_controllers_is_refused(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, ["k1", "k2"], ["c1", "c2", "c3"],
                                host_vars={"k2": {"kafka_process_roles": ["broker", "controller"]}})
    assert_refused_before_any_host(run_site(inventory, {}), "may only narrow the roles its groups give it (broker)")


PUBLISH = """\
- name: Publish the cluster's facts (no connection)
  hosts: kafka
  gather_facts: false
  tasks:
    - name: Validate and publish
      ansible.builtin.include_role:
        name: kafka
        tasks_from: publish
        public: true
    - name: Show what the other plays read
      ansible.builtin.copy:
        content: "{{ {'brokers': kafka_cluster_brokers, 'controllers': kafka_cluster_controllers,
                      'bootstrap': kafka_cluster_client_bootstrap, 'voters': _kafka_quorum_voters,
                      'roles': _kafka_process_roles, 'node_ports': kafka_cluster_node_ports} | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
"""


def test_broker_only_node_is_published_but_never_a_voter(tmp_path: Path) -> None:
    """kafka4 with kafka_process_roles [broker] next to three combined nodes: in the bootstrap lists, the brokers
    and (through them) the firewall's sources, never in controller.quorum.voters."""
    inventory = write_inventory(tmp_path, FOUR, host_vars={"k4": {"kafka_process_roles": ["broker"]}})
    (tmp_path / "publish.yml").write_text(PUBLISH)
    env = ansible_env(ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    res = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(tmp_path / "publish.yml"),
                          "-e", json.dumps({"out_dir": str(tmp_path), **SECRETS})],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    facts = {h: json.loads((tmp_path / f"{h}.json").read_text()) for h in FOUR}
    k1, k4 = facts["k1"], facts["k4"]
    assert k1["brokers"] == FOUR and k1["controllers"] == ["k1", "k2", "k3"]
    assert k1["bootstrap"] == ",".join(f"{h}.kraftwerk.invalid:9095" for h in FOUR)
    assert k1["voters"] == ",".join(f"{i}@k{i}.kraftwerk.invalid:9096" for i in (1, 2, 3))
    assert k4["voters"] == k1["voters"]
    assert k1["roles"] == ["broker", "controller"] and k4["roles"] == ["broker"]
    assert k4["node_ports"] == k1["node_ports"]


def test_good_input_reaches_the_hosts(tmp_path: Path) -> None:
    """The control case: with valid variables the play gets past validation and tries to connect."""
    assert_reaches_the_hosts(run_site(write_inventory(tmp_path, THREE), {}))


def test_good_input_with_apps_and_edge_reaches_the_hosts(tmp_path: Path) -> None:
    """The apps' and the edge's validation passes its own defaults (and a valid cluster id, JVM "%" options)."""
    extra = {"kafka_cluster_id": "MkU3OEVBNTcwNTJENDM2Qg",
             "kafka_jvm_extra_opts": "-XX:ErrorFile=/var/log/kafka/hs_err_%p.log",
             "kafka_extra_properties": {"message.max.bytes": 2097152, "log.cleaner.enable": True}}
    assert_reaches_the_hosts(run_site(write_inventory(tmp_path, THREE, apps=True), extra))


def test_bench_vars_reach_the_hosts(tmp_path: Path) -> None:
    """./kw bench's bench/lab-vars.yml (an extra edge upstream and location, a firewall rule, the rate-limit
    exemption) passes validation."""
    extra = yaml.safe_load((ROOT / "bench" / "lab-vars.yml").read_text())
    assert_reaches_the_hosts(run_site(write_inventory(tmp_path, THREE, apps=True), extra))


def test_valid_kept_cluster_id_reaches_the_hosts(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, THREE)
    (tmp_path / "cluster-id").mkdir()
    (tmp_path / "cluster-id" / "kraftwerk").write_text("MkU3OEVBNTcwNTJENDM2Qg\n")
    assert_reaches_the_hosts(run_site(inventory, {}))


def test_env_file_values_stay_on_their_line() -> None:
    """pyapp_env values need no validation: app.env.j2 quotes and escapes them (systemd EnvironmentFile syntax)."""
    template = (ROOT / "roles/pyapp/templates/app.env.j2").read_text()
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True)
    values = {"A": 'x\nExecStartPre=+/bin/sh', "B": 'x\r\nC=1', "D": 'say "hi" \\', "E": "$HOME `id`"}
    out = env.from_string(template).render(ansible_managed="managed", _pyapp_env_file_vars=values)
    lines = out.split("\n")
    assert lines[-1] == ""
    body = lines[1:-1]
    assert [line.split("=", 1)[0] for line in body] == sorted(values)
    for line in body:
        value = line.split("=", 1)[1]
        # One double-quoted value per line; every " and \ inside it is escaped.
        assert value.startswith('"') and value.endswith('"'), line
        inner = value[1:-1].replace("\\\\", "").replace('\\"', "")
        assert '"' not in inner and "\n" not in inner, line


def run_playbook(inventory: Path, path: str, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = ansible_env()
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(ROOT / path), "-e", json.dumps(extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize(("node", "message"), [
    pytest.param("k1", "k1 is a controller, a voter of the static quorum (k1, k2, k3): it can not be decommissioned",
                 id="a controller"),
    pytest.param("app1", "app1 is not a broker of this inventory (brokers: k1, k2, k3, k4)", id="not a broker"),
    pytest.param("", "Name the inventory host to decommission: -e kafka_decommission_node=<host>", id="no node"),
])
def test_decommission_refuses_before_any_host(tmp_path: Path, node: str, message: str) -> None:
    inventory = write_inventory(tmp_path, FOUR, apps=True, host_vars={"k4": {"kafka_process_roles": ["broker"]}})
    assert_refused_before_any_host(run_playbook(inventory, "playbooks/decommission.yml",
                                                {"kafka_decommission_node": node}), message)


def test_decommission_of_a_broker_only_node_reaches_the_hosts(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, FOUR, host_vars={"k4": {"kafka_process_roles": ["broker"]}})
    assert_reaches_the_hosts(run_playbook(inventory, "playbooks/decommission.yml", {"kafka_decommission_node": "k4"}))


def test_rebalance_with_a_bad_throttle_is_refused_before_any_host(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, FOUR, host_vars={"k4": {"kafka_process_roles": ["broker"]}})
    assert_refused_before_any_host(run_playbook(inventory, "playbooks/rebalance.yml", {"kafka_reassign_throttle": 10}),
                                   "kafka_reassign_throttle must be a number of bytes per second (at least 1024")
