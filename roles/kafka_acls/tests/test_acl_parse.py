"""Unit tests for the kafka_acl module's pure functions (parsing, validation, planning, CLI arguments).

The fixtures in fixtures/ are real, unedited output of Kafka 3.9.1's kafka-acls (kafka.admin.AclCommand)
against a single-node KRaft broker with StandardAuthorizer and a SASL_PLAINTEXT SCRAM-SHA-512 listener:
  acls_list_mixed.txt:       `--list` with 18 ACLs: five principals (one a certificate DN with a space and a
                             comma), literal and prefixed patterns, allow and deny, a host-restricted ACL, the
                             `*` topic, and topic, group, cluster and transactional-id resources;
  error_auth_failed.txt:     `--list` with a wrong admin password (stdout+stderr);
  error_not_authorized.txt:  `--list` as a user that is neither super user nor has cluster Describe;
  error_bad_operation.txt:   `--add --operation IdempotentWrite --topic t1` (followed by the whole usage text);
  error_security_disabled.txt: `--list` against a broker without authorizer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

_spec = importlib.util.spec_from_file_location("kafka_acl", HERE.parent / "library" / "kafka_acl.py")
assert _spec is not None and _spec.loader is not None
ka = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ka)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def acl(principal: str, rtype: str, name: str, operation: str, permission: str = "allow",
        pattern: str = "literal", host: str = "*") -> tuple[str, ...]:
    return ka.acl_entry(principal, rtype, name, pattern, operation, permission, host)


def listed() -> set[tuple[str, ...]]:
    return ka.parse_acl_list(fixture("acls_list_mixed.txt"))


# --- kafka-acls --list ---------------------------------------------------------------------------

def test_list_parses_every_acl() -> None:
    entries = listed()
    assert len(entries) == 18
    assert fixture("acls_list_mixed.txt").count("(principal=") == 18


def test_list_resource_types_and_patterns() -> None:
    entries = listed()
    assert acl("User:tx-app", "transactional_id", "tx-app-", "Write") in entries
    assert acl("User:tx-app", "transactional_id", "tx-app.", "Write", pattern="prefixed") in entries
    assert acl("User:ingest", "topic", "ingest.", "Write", pattern="prefixed") in entries
    assert acl("User:ingest", "cluster", "kafka-cluster", "IdempotentWrite") in entries
    assert acl("User:ops", "group", "ops-", "All", pattern="prefixed") in entries
    assert acl("User:orders-svc", "group", "orders-svc", "Read") in entries
    assert acl("User:orders-svc", "topic", "*", "Create") in entries


def test_list_operation_names_are_the_cli_names() -> None:
    ops = {e[4] for e in listed()}
    assert ops == {"Write", "Describe", "Read", "AlterConfigs", "DescribeConfigs", "Alter", "IdempotentWrite",
                   "Create", "Delete", "All"}


def test_list_deny_host_and_principal_with_comma_and_space() -> None:
    entries = listed()
    assert acl("User:ingest", "topic", "ingest.audit", "Write", permission="deny") in entries
    assert acl("User:CN=bad client,O=Example", "topic", "orders", "Read", permission="deny") in entries
    assert acl("User:ops", "topic", "orders", "AlterConfigs", host="10.0.0.5") in entries


def test_list_empty_output() -> None:
    # A cluster without ACLs: `--list` prints nothing at all (rc 0).
    assert ka.parse_acl_list("") == set()


def test_list_ignores_log_noise() -> None:
    noise = ("[2026-11-25 14:09:47,893] WARN [AdminClient clientId=adminclient-1] Metadata update failed "
             "(org.apache.kafka.clients.admin.internals.AdminMetadataManager)\n")
    text = noise + fixture("acls_list_mixed.txt") + noise
    assert ka.parse_acl_list(text) == listed()


def test_list_resource_name_with_pattern_like_text() -> None:
    # Group names may hold anything; the header regex anchors on the last ", patternType=".
    text = ("Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=a, b, patternType=LITERAL)`: \n"
            " \t(principal=User:x, host=*, operation=READ, permissionType=ALLOW) \n\n")
    assert ka.parse_acl_list(text) == {acl("User:x", "group", "a, b", "Read")}


# --- declaration ---------------------------------------------------------------------------------

def test_operation_names() -> None:
    assert ka.operation_name("DescribeConfigs") == "DescribeConfigs"
    assert ka.operation_name("DESCRIBE_CONFIGS") == "DescribeConfigs"
    assert ka.operation_name("describe-configs") == "DescribeConfigs"
    assert ka.operation_name("idempotentwrite") == "IdempotentWrite"
    assert ka.operation_name("Frobnicate") is None
    assert ka.operation_name(None) is None


def test_validate_expands_per_operation_and_applies_defaults() -> None:
    errors, entries = ka.validate_declared([
        {"principal": "User:orders-svc", "resource_type": "topic", "name": "orders",
         "operations": ["Read", "DESCRIBE", "read"]},
        {"principal": "User:ingest", "resource_type": "cluster", "operations": ["IdempotentWrite"]},
    ])
    assert errors == []
    assert entries == {acl("User:orders-svc", "topic", "orders", "Read"),
                       acl("User:orders-svc", "topic", "orders", "Describe"),
                       acl("User:ingest", "cluster", "kafka-cluster", "IdempotentWrite")}


@pytest.mark.parametrize("entry,message", [
    ({"principal": "orders-svc", "resource_type": "topic", "name": "t", "operations": ["Read"]},
     "principal 'orders-svc' must be Type:name"),
    ({"principal": "User:", "resource_type": "topic", "name": "t", "operations": ["Read"]},
     "must be Type:name"),
    ({"principal": "User:x", "resource_type": "topic", "name": "t", "operations": ["IdempotentWrite"]},
     "operation IdempotentWrite is not valid on a topic"),
    ({"principal": "User:x", "resource_type": "group", "name": "g", "operations": ["Write"]},
     "operation Write is not valid on a group; Kafka accepts Read, Describe, Delete, All"),
    ({"principal": "User:x", "resource_type": "transactional_id", "name": "tx", "operations": ["Read"]},
     "not valid on a transactional_id"),
    ({"principal": "User:x", "resource_type": "topic", "name": "t", "operations": ["Frobnicate"]},
     "unknown operation 'Frobnicate'"),
    ({"principal": "User:x", "resource_type": "topic", "name": "t", "operations": []},
     "operations must be a non-empty list"),
    ({"principal": "User:x", "resource_type": "topic", "name": "", "operations": ["Read"]},
     "name must be a non-empty resource name"),
    ({"principal": "User:x", "resource_type": "cluster", "name": "prod", "operations": ["Alter"]},
     "the cluster resource is named kafka-cluster"),
    ({"principal": "User:x", "resource_type": "cluster", "pattern_type": "prefixed", "operations": ["Alter"]},
     "cluster ACLs must have pattern_type literal"),
    ({"principal": "User:x", "resource_type": "user", "name": "u", "operations": ["Read"]},
     "resource_type 'user' must be one of"),
    ({"principal": "User:x", "resource_type": "topic", "name": "t", "operations": ["Read"], "host": " 10.0.0.1"},
     "host ' 10.0.0.1' must be * or an IP address"),
])
def test_validate_refuses(entry: dict[str, object], message: str) -> None:
    errors, entries = ka.validate_declared([entry])
    assert entries == set()
    assert any(message in e for e in errors), errors


def test_validate_accepts_every_operation_kafka_accepts() -> None:
    for rtype, operations in ka.SUPPORTED_OPERATIONS.items():
        errors, entries = ka.validate_declared([{"principal": "User:*", "resource_type": rtype, "name": "x"
                                                 if rtype != "cluster" else None, "operations": list(operations)}])
        assert errors == [] and len(entries) == len(operations)


# --- plan ----------------------------------------------------------------------------------------

def declared_from_fixture() -> set[tuple[str, ...]]:
    """The declaration that produced the fixture (the way the playbooks would declare it)."""
    errors, entries = ka.validate_declared([
        {"principal": "User:orders-svc", "resource_type": "topic", "name": "orders",
         "operations": ["Read", "Describe"]},
        {"principal": "User:orders-svc", "resource_type": "group", "name": "orders-svc", "operations": ["Read"]},
        {"principal": "User:orders-svc", "resource_type": "topic", "name": "*", "operations": ["Create", "Delete"]},
        {"principal": "User:ingest", "resource_type": "topic", "name": "ingest.", "pattern_type": "prefixed",
         "operations": ["Write", "Describe"]},
        {"principal": "User:ingest", "resource_type": "topic", "name": "ingest.audit", "permission": "deny",
         "operations": ["Write"]},
        {"principal": "User:ingest", "resource_type": "cluster", "operations": ["IdempotentWrite"]},
        {"principal": "User:tx-app", "resource_type": "transactional_id", "name": "tx-app-",
         "operations": ["Write", "Describe"]},
        {"principal": "User:tx-app", "resource_type": "transactional_id", "name": "tx-app.", "pattern_type": "prefixed",
         "operations": ["Write"]},
        {"principal": "User:ops", "resource_type": "group", "name": "ops-", "pattern_type": "prefixed",
         "operations": ["All"]},
        {"principal": "User:ops", "resource_type": "cluster", "name": "kafka-cluster",
         "operations": ["DescribeConfigs", "Describe", "Alter"]},
        {"principal": "User:ops", "resource_type": "topic", "name": "orders", "host": "10.0.0.5",
         "operations": ["AlterConfigs"]},
        {"principal": "User:CN=bad client,O=Example", "resource_type": "topic", "name": "orders",
         "permission": "deny", "operations": ["Read"]},
    ])
    assert errors == []
    return entries


def test_plan_matching_declaration_changes_nothing() -> None:
    to_add, undeclared, to_remove = ka.plan_acls(declared_from_fixture(), listed(), remove_undeclared=True)
    assert (to_add, undeclared, to_remove) == ([], [], [])


def test_plan_adds_missing_and_reports_undeclared() -> None:
    declared = declared_from_fixture()
    declared.discard(acl("User:ops", "group", "ops-", "All", pattern="prefixed"))
    declared.add(acl("User:orders-svc", "topic", "orders.dlq", "Write"))
    to_add, undeclared, to_remove = ka.plan_acls(declared, listed(), remove_undeclared=False)
    assert to_add == [acl("User:orders-svc", "topic", "orders.dlq", "Write")]
    assert undeclared == [acl("User:ops", "group", "ops-", "All", pattern="prefixed")]
    assert to_remove == []
    _, _, to_remove = ka.plan_acls(declared, listed(), remove_undeclared=True)
    assert to_remove == undeclared


def test_plan_permission_and_host_are_part_of_the_acl() -> None:
    declared = declared_from_fixture()
    declared.discard(acl("User:ingest", "topic", "ingest.audit", "Write", permission="deny"))
    declared.add(acl("User:ingest", "topic", "ingest.audit", "Write"))
    to_add, undeclared, _ = ka.plan_acls(declared, listed(), remove_undeclared=False)
    assert to_add == [acl("User:ingest", "topic", "ingest.audit", "Write")]
    assert undeclared == [acl("User:ingest", "topic", "ingest.audit", "Write", permission="deny")]


def test_group_entries_one_call_per_principal_permission_host_and_pattern() -> None:
    groups = ka.group_entries(listed())
    keys = [key for key, _ in groups]
    assert len(keys) == len(set(keys))
    ops = dict(groups)
    assert ops[("User:ops", "allow", "*", "cluster", "kafka-cluster", "literal")] == ["Alter", "Describe",
                                                                                      "DescribeConfigs"]
    assert ops[("User:ops", "allow", "10.0.0.5", "topic", "orders", "literal")] == ["AlterConfigs"]
    assert sum(len(v) for v in ops.values()) == 18


def test_acl_args_add_topic_prefixed() -> None:
    key = ("User:ingest", "allow", "*", "topic", "ingest.", "prefixed")
    assert ka.acl_args("add", key, ["Describe", "Write"]) == [
        "--add", "--allow-principal", "User:ingest", "--allow-host", "*", "--operation", "Describe",
        "--operation", "Write", "--topic", "ingest.", "--resource-pattern-type", "prefixed"]


def test_acl_args_remove_deny_cluster_and_transactional_id() -> None:
    assert ka.acl_args("remove", ("User:x", "deny", "10.0.0.1", "cluster", "kafka-cluster", "literal"), ["Alter"]) == [
        "--remove", "--force", "--deny-principal", "User:x", "--deny-host", "10.0.0.1", "--operation", "Alter",
        "--cluster", "--resource-pattern-type", "literal"]
    assert ka.acl_args("add", ("User:t", "allow", "*", "transactional_id", "tx", "literal"), ["Write"])[-3:] == [
        "tx", "--resource-pattern-type", "literal"]
    assert "--transactional-id" in ka.acl_args("add", ("User:t", "allow", "*", "transactional_id", "tx", "literal"),
                                               ["Write"])


def test_acls_text_is_sorted_one_line_per_acl() -> None:
    text = ka.acls_text(listed())
    lines = text.splitlines()
    assert len(lines) == 18 and lines == sorted(lines)
    assert "topic literal orders: deny User:CN=bad client,O=Example Read from *" in lines
    assert "group prefixed ops-: allow User:ops All from *" in lines


# --- errors --------------------------------------------------------------------------------------

def test_error_auth_failed() -> None:
    out = fixture("error_auth_failed.txt")
    assert ka.explain_failure(out).startswith("the client in command_config could not authenticate")
    summary = ka.error_summary(out)
    assert summary.startswith("Error while executing ACL command: org.apache.kafka.common.errors."
                              "SaslAuthenticationException: Authentication failed")
    assert "\tat " not in summary and "Caused by" not in summary


def test_error_not_authorized() -> None:
    out = fixture("error_not_authorized.txt")
    assert "not allowed to describe or alter ACLs" in ka.explain_failure(out)
    assert "ClusterAuthorizationException" in ka.error_summary(out)


def test_error_bad_operation_drops_the_usage_text() -> None:
    out = fixture("error_bad_operation.txt")
    assert ka.error_summary(out) == ("ResourceType TOPIC only supports operations Read, All, AlterConfigs, "
                                     "DescribeConfigs, Delete, Write, Alter, Create, Describe")
    assert "operation name" in ka.explain_failure(out)


def test_error_security_disabled() -> None:
    out = fixture("error_security_disabled.txt")
    assert "SECURITY_DISABLED" in ka.explain_failure(out)
    assert "SecurityDisabledException" in ka.error_summary(out)
