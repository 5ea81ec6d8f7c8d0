"""Tests that try to get in: Kafka's TLS, SASL/SCRAM and ACLs, the host firewall, TLS scans, secrets.

Each attack runs against the real cluster over the real network and must be refused; each has a control
case (the same path with the right credentials or from an allowed host) that must work, so that a test can't
pass because nothing works at all.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ADMIN_CONFIG, ROOT, address, connects_from, connects_here, host, hosts_of, vault

KAFKA = hosts_of("kafka")
APP = hosts_of("producer")[0]
EDGE = hosts_of("nginx")[0]
CLIENT_PORT, INTERNAL_PORT, CONTROLLER_PORT = 9095, 9094, 9096
TOPIC = "test-topic"
# Short client timeouts: a refused client fails in seconds instead of retrying for minutes.
FAST = "request.timeout.ms=8000\ndefault.api.timeout.ms=15000\nmax.block.ms=15000\n"
JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="{u}" password="{p}";'


def bootstrap(port: int = CLIENT_PORT) -> str:
    return ",".join(f"{address(h)}:{port}" for h in KAFKA)


@pytest.fixture(scope="module")
def secrets() -> dict[str, Any]:
    return vault()


@pytest.fixture(scope="module")
def kafka1() -> Any:
    return host(KAFKA[0])


@pytest.fixture()
def client_config(kafka1: Any) -> Iterator[Any]:
    """Writes a client properties file (0600, in a private temporary directory) on kafka1; removes it after."""
    tmp = kafka1.check_output("mktemp -d")
    made: list[str] = []

    def write(body: str) -> str:
        path = f"{tmp}/client-{len(made)}.properties"
        kafka1.run(f"umask 077; cat > {path} <<'EOF'\n{FAST}{body}\nEOF")
        made.append(path)
        return path

    yield write
    kafka1.run(f"rm -rf {shlex.quote(tmp)}")


def scram(user: str, password: str) -> str:
    return ("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
            f"sasl.jaas.config={JAAS.format(u=user, p=password)}\n"
            "ssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/tls/ca.crt\n")


def topics_list(kafka1: Any, config: str) -> Any:
    return kafka1.run(f"timeout 120 kafka-topics --bootstrap-server {bootstrap()} --command-config {config} --list")


# --- Kafka: authentication -------------------------------------------------------------------------------

def test_admin_config_lists_topics_control(kafka1: Any) -> None:
    res = topics_list(kafka1, ADMIN_CONFIG)
    assert res.rc == 0 and TOPIC in res.stdout.split(), res.stdout + res.stderr


def test_plaintext_client_is_refused(kafka1: Any, client_config: Any) -> None:
    res = topics_list(kafka1, client_config("security.protocol=PLAINTEXT\n"))
    assert res.rc != 0, res.stdout
    assert TOPIC not in res.stdout


def test_tls_without_credentials_is_refused(kafka1: Any, client_config: Any) -> None:
    cfg = client_config("security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/tls/ca.crt\n")
    res = topics_list(kafka1, cfg)
    assert res.rc != 0 and TOPIC not in res.stdout, res.stdout


def test_wrong_password_is_refused(kafka1: Any, client_config: Any) -> None:
    res = topics_list(kafka1, client_config(scram("admin", "not-the-password-" + uuid.uuid4().hex)))
    assert res.rc != 0
    assert "Authentication failed" in res.stderr + res.stdout, res.stderr[-2000:]


def test_unknown_user_is_refused(kafka1: Any, client_config: Any) -> None:
    res = topics_list(kafka1, client_config(scram("intruder-" + uuid.uuid4().hex[:8], "whatever-password-1")))
    assert res.rc != 0
    assert "Authentication failed" in res.stderr + res.stdout, res.stderr[-2000:]


# --- Kafka: authorization ------------------------------------------------------------------------------------

def test_principal_without_acls_sees_no_topic(kafka1: Any, client_config: Any) -> None:
    """A user that authenticates but has no ACL can't even see that test-topic exists."""
    user, password = "noacl-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    # A throw-away user: its password may be on this one command line.
    kafka1.check_output(f"kafka-configs --bootstrap-server {bootstrap()} --command-config {ADMIN_CONFIG} --alter "
                        f"--entity-type users --entity-name {user} "
                        f"--add-config 'SCRAM-SHA-512=[iterations=8192,password={password}]'")
    try:
        cfg = client_config(scram(user, password))
        res = None
        for _ in range(30):  # the new credential reaches every broker through the metadata log
            res = topics_list(kafka1, cfg)
            if res.rc == 0:
                break
        assert res is not None and res.rc == 0, res.stderr[-2000:] if res else ""
        assert TOPIC not in res.stdout.split() and res.stdout.strip() == "", res.stdout
    finally:
        kafka1.run(f"kafka-configs --bootstrap-server {bootstrap()} --command-config {ADMIN_CONFIG} --alter "
                   f"--entity-type users --entity-name {user} --delete-config SCRAM-SHA-512")


def test_producer_principal_can_not_read_or_create(kafka1: Any, client_config: Any, secrets: dict[str, Any]) -> None:
    cfg = client_config(scram("kraftwerk-producer", secrets["vault_kraftwerk_producer_kafka_password"]))
    read = kafka1.run(f"timeout 120 kafka-console-consumer --bootstrap-server {bootstrap()} --consumer.config {cfg} "
                      f"--topic {TOPIC} --partition 0 --offset earliest --max-messages 1 --timeout-ms 20000")
    assert "TopicAuthorizationException" in read.stderr or "Not authorized to access topics" in read.stderr, read.stderr[-2000:]
    assert read.stdout.strip() == ""
    topic = "intruder-" + uuid.uuid4().hex[:8]
    create = kafka1.run(f"timeout 120 kafka-topics --bootstrap-server {bootstrap()} --command-config {cfg} "
                        f"--create --topic {topic} --partitions 1 --replication-factor 3")
    assert create.rc != 0 and "Authorization failed" in create.stderr + create.stdout, create.stderr[-2000:]
    assert topic not in topics_list(kafka1, ADMIN_CONFIG).stdout.split()


def test_producer_principal_can_write_control(kafka1: Any, client_config: Any, secrets: dict[str, Any]) -> None:
    cfg = client_config(scram("kraftwerk-producer", secrets["vault_kraftwerk_producer_kafka_password"]) + "acks=all\n")
    res = kafka1.run(f"echo security-control-{uuid.uuid4().hex} | timeout 120 kafka-console-producer "
                     f"--bootstrap-server {bootstrap()} --producer.config {cfg} --topic {TOPIC}")
    assert res.rc == 0 and "Exception" not in res.stderr, res.stderr[-2000:]


def test_consumer_principal_can_not_write(kafka1: Any, client_config: Any, secrets: dict[str, Any]) -> None:
    cfg = client_config(scram("kraftwerk-consumer", secrets["vault_kraftwerk_consumer_kafka_password"]) + "acks=all\n")
    marker = "intruder-" + uuid.uuid4().hex
    res = kafka1.run(f"echo {marker} | timeout 120 kafka-console-producer --bootstrap-server {bootstrap()} "
                     f"--producer.config {cfg} --topic {TOPIC}")
    assert "TopicAuthorizationException" in res.stderr or "Not authorized to access topics" in res.stderr, res.stderr[-2000:]


def test_backup_principal_can_not_write_the_topics_it_backs_up(kafka1: Any, client_config: Any,
                                                               secrets: dict[str, Any]) -> None:
    cfg = client_config(scram("kraftwerk-backup", secrets["vault_kraftwerk_backup_kafka_password"]) + "acks=all\n")
    marker = "intruder-" + uuid.uuid4().hex
    res = kafka1.run(f"echo {marker} | timeout 120 kafka-console-producer --bootstrap-server {bootstrap()} "
                     f"--producer.config {cfg} --topic {TOPIC}")
    assert "TopicAuthorizationException" in res.stderr or "Not authorized to access topics" in res.stderr, res.stderr[-2000:]


def test_consumer_principal_can_not_change_or_delete_the_topic(kafka1: Any, client_config: Any,
                                                                secrets: dict[str, Any]) -> None:
    cfg = client_config(scram("kraftwerk-consumer", secrets["vault_kraftwerk_consumer_kafka_password"]))
    alter = kafka1.run(f"timeout 120 kafka-configs --bootstrap-server {bootstrap()} --command-config {cfg} --alter "
                       f"--entity-type topics --entity-name {TOPIC} --add-config retention.ms=1000")
    assert alter.rc != 0 and "Authorization" in alter.stderr + alter.stdout, alter.stderr[-2000:]
    delete = kafka1.run(f"timeout 120 kafka-topics --bootstrap-server {bootstrap()} --command-config {cfg} "
                        f"--delete --topic {TOPIC}")
    assert delete.rc != 0
    assert TOPIC in topics_list(kafka1, ADMIN_CONFIG).stdout.split()
    configs = kafka1.check_output(f"kafka-configs --bootstrap-server {bootstrap()} --command-config {ADMIN_CONFIG} "
                                  f"--describe --entity-type topics --entity-name {TOPIC}")
    assert "retention.ms=1000" not in configs


def test_acls_are_exactly_the_declared_ones(kafka1: Any) -> None:
    out = kafka1.check_output(f"kafka-acls --bootstrap-server {bootstrap()} --command-config {ADMIN_CONFIG} --list")
    principals = set(re.findall(r"principal=(User:[^,]+)", out))
    assert principals == {"User:kraftwerk-producer", "User:kraftwerk-consumer", "User:kraftwerk-backup"}, out
    assert "operation=ALL" not in out


# --- The host firewall ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", [CLIENT_PORT, INTERNAL_PORT, CONTROLLER_PORT])
def test_edge_host_can_not_reach_kafka(port: int) -> None:
    assert not connects_from(EDGE, address(KAFKA[0]), port)


def test_app_host_reaches_only_the_client_listener() -> None:
    ip = address(KAFKA[0])
    assert connects_from(APP, ip, CLIENT_PORT)  # control: the apps' own path
    assert not connects_from(APP, ip, INTERNAL_PORT)
    assert not connects_from(APP, ip, CONTROLLER_PORT)


@pytest.mark.parametrize(("target", "port"), [("kafka", CLIENT_PORT), ("kafka", CONTROLLER_PORT),
                                              ("app", 8100), ("app", 8200)])
def test_outsider_can_not_reach_kafka_or_the_apps(target: str, port: int) -> None:
    """The controller (not in any group) is an outsider: only SSH and the edge's 80/443 are open to it."""
    ip = address(KAFKA[0] if target == "kafka" else APP)
    assert not connects_here(ip, port)
    assert connects_here(ip, 22)  # control: the host is up and reachable


def test_edge_reaches_the_apps_and_the_world_reaches_the_edge() -> None:
    assert connects_from(EDGE, address(APP), 8100)
    assert connects_here(address(EDGE), 443)


# --- TLS scans ----------------------------------------------------------------------------------------------------

WEAK = re.compile(r"(RC4|3DES|DES-|NULL|EXP|anon|MD5|CBC|-SHA$|^AES|^CAMELLIA|^SEED|^IDEA|PSK|SRP)")


def test_edge_tls_scan_finds_nothing_below_tls_1_2_and_no_weak_cipher() -> None:
    out = subprocess.run(["sslscan", "--no-colour", "--xml=-", f"{address(EDGE)}:443"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    doc = ET.fromstring(out[out.index("<?xml"):])
    enabled = {p.get("type", "") + p.get("version", ""): p.get("enabled") for p in doc.iter("protocol")}
    assert enabled.get("tls1.2") == "1" and enabled.get("tls1.3") == "1", enabled
    for proto in ("ssl2", "ssl3", "tls1.0", "tls1.1"):
        assert enabled.get(proto) == "0", enabled
    ciphers = [(c.get("sslversion"), c.get("cipher", "")) for c in doc.iter("cipher") if c.get("status") in ("accepted", "preferred")]
    assert ciphers, out
    weak = [c for c in ciphers if c[0] == "TLSv1.2" and WEAK.search(c[1])]
    assert not weak, ciphers


# Run on the app host (allowed to reach the client listener): handshakes that a broker must refuse.
BROKER_PROBE = r'''
import socket, ssl, sys, json
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def attempt(minv, maxv, ciphers):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    ctx.minimum_version, ctx.maximum_version = minv, maxv
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as tls:
                return tls.version() + " " + tls.cipher()[0]
    except (ssl.SSLError, OSError) as exc:
        return "refused: " + type(exc).__name__
V = ssl.TLSVersion
weak12 = "AES128-SHA:AES256-SHA:AES128-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256:DES-CBC3-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0"
print(json.dumps({
    "tls1.0": attempt(V.TLSv1, V.TLSv1, "ALL:@SECLEVEL=0"),
    "tls1.1": attempt(V.TLSv1_1, V.TLSv1_1, "ALL:@SECLEVEL=0"),
    "tls1.2-weak": attempt(V.TLSv1_2, V.TLSv1_2, weak12),
    "tls1.2-strong": attempt(V.TLSv1_2, V.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"),
    "tls1.3": attempt(V.TLSv1_3, V.TLSv1_3, None),
}))
'''


def test_broker_tls_scan_finds_nothing_below_tls_1_2_and_no_weak_cipher() -> None:
    import json

    app = host(APP)
    ca = "/etc/kraftwerk-producer/kafka-ca.crt"
    out = app.check_output(f"python3 -c {shlex.quote(BROKER_PROBE)} {address(KAFKA[0])} {CLIENT_PORT} {ca}")
    result = json.loads(out)
    assert result["tls1.0"].startswith("refused") and result["tls1.1"].startswith("refused"), result
    assert result["tls1.2-weak"].startswith("refused"), result
    assert result["tls1.2-strong"].startswith("TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"), result  # control
    assert result["tls1.3"].startswith("TLSv1.3"), result


# --- Secrets ------------------------------------------------------------------------------------------------------

def _secret_values(secrets: dict[str, Any]) -> list[str]:
    values: list[str] = []
    for value in secrets.values():
        values += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    assert len(values) >= 5 and all(len(v) >= 16 for v in values)
    return values


def test_no_clear_text_secret_in_the_repo(secrets: dict[str, Any]) -> None:
    vault_file = ROOT / "inventory" / "lab" / "group_vars" / "all" / "vault.yml"
    assert vault_file.read_text().startswith("$ANSIBLE_VAULT;"), "the lab's vault is not encrypted"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    assert "inventory/lab/group_vars/all/vault.yml" not in files and "inventory/lab/.vault-pass" not in files
    for value in _secret_values(secrets):
        hits = subprocess.run(["git", "grep", "-l", "-F", "--untracked", value], cwd=ROOT, capture_output=True, text=True)
        assert hits.stdout == "", f"a secret is in clear in {hits.stdout.split()}"


@pytest.mark.parametrize("name", hosts_of("all"))
def test_no_secret_in_world_readable_files_or_command_lines(name: str, secrets: dict[str, Any]) -> None:
    h = host(name)
    values = _secret_values(secrets)
    patterns = "\n".join(values)
    tmp = h.check_output("mktemp")
    try:
        h.run(f"umask 077; cat > {tmp} <<'EOF'\n{patterns}\nEOF")
        hits = h.run(f"find /etc /opt /var /srv /home /root /tmp /run -xdev -type f -perm -o+r -size -5M "
                     f"-not -path '/proc/*' -print0 2>/dev/null | xargs -0 -r grep -l -F -f {tmp} 2>/dev/null")
        assert hits.stdout.strip() == "", f"world-readable files with a secret on {name}: {hits.stdout}"
        procs = h.check_output("ps -eo args")
        assert not [v for v in values if v in procs], f"a secret is on a command line on {name}"
    finally:
        h.run(f"rm -f {tmp}")
