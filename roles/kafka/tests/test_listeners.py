"""The listener filters: the declared state, and each phase of the PLAINTEXT -> SASL_SSL migration."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "kafka_listeners", Path(__file__).resolve().parent.parent / "filter_plugins" / "kafka_listeners.py")
assert _spec and _spec.loader
kl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kl)

SECURE = [
    {"name": "CLIENT", "port": 9095, "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "client": True},
    {"name": "INTERNAL", "port": 9094, "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "inter_broker": True},
    {"name": "CONTROLLER_SSL", "port": 9096, "protocol": "SSL", "controller": True},
]
# What the role rendered before listeners were data (commit 8bf17be), node 1 of 3.
LEGACY_TEXT = """# Kafka 3.9.1
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093
log.dirs=/var/lib/kafka/data
advertised.listeners=PLAINTEXT://10.0.0.1:9092
inter.broker.listener.name=PLAINTEXT
"""
VOTERS = "1@10.0.0.1:9096,2@10.0.0.2:9096,3@10.0.0.3:9096"


def ctx(current: dict[str, str]) -> dict[str, object]:
    return {"listeners": SECURE, "current": current, "is_broker": True, "is_controller": True,
            "bind_address": "10.0.0.1", "advertised_host": "10.0.0.1", "voters": VOTERS,
            "broker_user": "kafka-broker", "broker_password": "pw-pw-pw-pw-pw",
            "super_users": ["User:kafka-broker", "User:kafka1", "User:admin"], "authorizer": True,
            "tls": {"ssl.keystore.type": "PEM"}}


def test_fresh_node_gets_the_declared_state() -> None:
    assert kl.kafka_node_phase({}, SECURE) == 3
    p = kl.kafka_listener_properties(ctx({}), 3)
    assert p["listeners"] == "CLIENT://10.0.0.1:9095,INTERNAL://10.0.0.1:9094,CONTROLLER_SSL://10.0.0.1:9096"
    assert p["advertised.listeners"] == "CLIENT://10.0.0.1:9095,INTERNAL://10.0.0.1:9094"
    assert p["controller.listener.names"] == "CONTROLLER_SSL"
    assert p["controller.quorum.voters"] == VOTERS
    assert p["inter.broker.listener.name"] == "INTERNAL"
    assert p["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert p["listener.name.controller_ssl.ssl.client.auth"] == "required"
    assert 'username="kafka-broker"' in p["listener.name.internal.scram-sha-512.sasl.jaas.config"]
    assert "username" not in p["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert p["super.users"] == "User:kafka-broker;User:kafka1;User:admin"
    assert "ANONYMOUS" not in p["super.users"]
    assert p["allow.everyone.if.no.acl.found"] == "false"


def test_migration_walks_through_three_phases() -> None:
    legacy = kl.kafka_parse_properties(LEGACY_TEXT)
    assert kl.kafka_node_phase(legacy, SECURE) == 0
    assert kl.kafka_old_listeners(legacy, SECURE) == ["PLAINTEXT", "CONTROLLER"]

    p1 = kl.kafka_listener_properties(ctx(legacy), 1)
    assert p1["listeners"].startswith("PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093,CLIENT://")
    assert p1["controller.listener.names"] == "CONTROLLER,CONTROLLER_SSL"   # old one first: outbound unchanged
    assert p1["controller.quorum.voters"] == legacy["controller.quorum.voters"]
    assert p1["inter.broker.listener.name"] == "PLAINTEXT"
    assert "User:ANONYMOUS" in p1["super.users"]   # PLAINTEXT traffic keeps working under the authorizer
    assert "PLAINTEXT:PLAINTEXT" in p1["listener.security.protocol.map"]
    rendered1 = "\n".join(f"{k}={v}" for k, v in p1.items())
    after1 = kl.kafka_parse_properties(rendered1)
    assert kl.kafka_node_phase(after1, SECURE) == 1

    p2 = kl.kafka_listener_properties(ctx(after1), 2)
    assert p2["controller.listener.names"] == "CONTROLLER_SSL,CONTROLLER"
    assert p2["controller.quorum.voters"] == VOTERS
    assert p2["inter.broker.listener.name"] == "INTERNAL"
    assert p2["listeners"].startswith("PLAINTEXT://10.0.0.1:9092,CONTROLLER://10.0.0.1:9093,")
    assert "User:ANONYMOUS" in p2["super.users"]
    after2 = kl.kafka_parse_properties("\n".join(f"{k}={v}" for k, v in p2.items()))
    assert kl.kafka_node_phase(after2, SECURE) == 2

    p3 = kl.kafka_listener_properties(ctx(after2), 3)
    assert p3 == kl.kafka_listener_properties(ctx({}), 3)
    after3 = kl.kafka_parse_properties("\n".join(f"{k}={v}" for k, v in p3.items()))
    assert kl.kafka_node_phase(after3, SECURE) == 3


def test_broker_only_node_maps_the_old_controller_listener() -> None:
    legacy = kl.kafka_parse_properties(
        "listeners=PLAINTEXT://10.0.0.4:9092\nlistener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
        "controller.listener.names=CONTROLLER\nadvertised.listeners=PLAINTEXT://10.0.0.4:9092\n"
        "inter.broker.listener.name=PLAINTEXT\ncontroller.quorum.voters=1@10.0.0.1:9093\n")
    c = dict(ctx(legacy), is_controller=False, bind_address="10.0.0.4", advertised_host="10.0.0.4")
    p1 = kl.kafka_listener_properties(c, 1)
    assert "CONTROLLER_SSL://" not in p1["listeners"]
    assert "CONTROLLER:PLAINTEXT" in p1["listener.security.protocol.map"]
    assert "CONTROLLER_SSL:SSL" in p1["listener.security.protocol.map"]
    assert p1["controller.listener.names"] == "CONTROLLER,CONTROLLER_SSL"


def test_voter_ids() -> None:
    """The ids of controller.quorum.voters: the set a running cluster keeps (compared before any change)."""
    assert kl.kafka_voter_ids("1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093") == [1, 2, 3]
    assert kl.kafka_voter_ids("3@h3:9096, 1@h1:9096,2@h2:9096") == [1, 2, 3]
    assert kl.kafka_voter_ids("") == [] and kl.kafka_voter_ids(None) == []
