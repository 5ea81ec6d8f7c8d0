"""Unit tests for the kafka_scram module's pure functions (parsing, validation, fingerprints, planning).

The fixtures are real, unedited output of Kafka 3.9.1's kafka-configs (kafka.admin.ConfigCommand) against a
single-node KRaft broker with StandardAuthorizer and a SASL_PLAINTEXT SCRAM-SHA-512 listener:
  scram_users_describe.txt:            `--describe --entity-type users`: four SCRAM users (one with both
                                       mechanisms, one with '.', '-' and '@' in its name, iterations 4096, 8192
                                       and 16384), user quotas, a quota-only user and the default-user quota;
  scram_error_too_many_iterations.txt: `--alter ... --add-config-file` with iterations=20000;
  scram_error_invalid_credential.txt:  the same with the value in brackets (the file path does not strip
                                       them; Kafka echoes the whole value, password included: a dummy here);
  scram_error_auth_failed.txt:         `--describe` with a wrong admin password;
  scram_error_not_authorized.txt:      `--describe` as a user that is not a super user.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

_spec = importlib.util.spec_from_file_location("kafka_scram", HERE.parent / "library" / "kafka_scram.py")
assert _spec is not None and _spec.loader is not None
ks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ks)

KEY = "00" * 31 + "01"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def actual() -> dict[str, dict[str, int]]:
    return ks.parse_users_describe(fixture("scram_users_describe.txt"))


def users(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    errors, declared = ks.validate_declared(list(entries))
    assert errors == []
    return declared


def state_for(declared: list[dict[str, Any]], key: str = KEY) -> dict[str, Any]:
    creds: dict[str, dict[str, str]] = {}
    for u in declared:
        creds.setdefault(u["name"], {})[u["mechanism"]] = ks.fingerprint(key, u["name"], u["mechanism"],
                                                                         u["iterations"], u["password"])
    return {"version": 1, "key": key, "credentials": creds}


# --- kafka-configs --describe --entity-type users ------------------------------------------------

def test_describe_scram_users() -> None:
    assert actual() == {
        "admin": {"SCRAM-SHA-512": 4096},
        "alice": {"SCRAM-SHA-512": 8192},
        "bob": {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 4096},
        "svc.orders-1@example.com": {"SCRAM-SHA-256": 16384},
    }


def test_describe_ignores_quota_lines_and_noise() -> None:
    text = ("[2026-11-25 14:09:50,869] WARN something (org.apache.kafka.clients.NetworkClient)\n"
            + fixture("scram_users_describe.txt"))
    assert "quota-only" not in ks.parse_users_describe(text)
    assert ks.parse_users_describe(text) == actual()
    assert ks.parse_users_describe("") == {}


# --- validation ----------------------------------------------------------------------------------

def test_validate_defaults() -> None:
    declared = users({"name": "orders-svc", "password": "Pw-1.x!"})
    assert declared == [{"name": "orders-svc", "password": "Pw-1.x!", "mechanism": "SCRAM-SHA-512",
                         "iterations": 8192}]


@pytest.mark.parametrize("password", ["a,b", "a[b", "a]b", 'a"b', "a'b", "a\\b", "a b", "a\tb", "a\nb", "a\x7fb", ""])
def test_validate_refuses_passwords_kafka_cannot_carry(password: str) -> None:
    errors, _ = ks.validate_declared([{"name": "u", "password": password}])
    assert len(errors) == 1
    assert "password" in errors[0]
    if password:
        assert password not in errors[0].replace("user #1 (u)", "")


def test_validate_refusal_never_shows_the_password() -> None:
    errors, _ = ks.validate_declared([{"name": "u", "password": "Sup3r,Secret"}])
    assert errors and "Sup3r" not in " ".join(errors) and "Secret" not in " ".join(errors)
    assert "','" in errors[0]


@pytest.mark.parametrize("entry,message", [
    ({"name": "", "password": "p"}, "must not be empty"),
    ({"name": "a b", "password": "p"}, "contains characters"),
    ({"name": "a=b", "password": "p"}, "contains characters"),
    ({"name": "u", "password": "p", "iterations": 4095}, "iterations must be 4096 to 16384"),
    ({"name": "u", "password": "p", "iterations": 16385}, "iterations must be 4096 to 16384"),
    ({"name": "u", "password": "p", "mechanism": "SCRAM-SHA-1"}, "mechanism 'SCRAM-SHA-1' must be one of"),
])
def test_validate_refuses(entry: dict[str, Any], message: str) -> None:
    errors, _ = ks.validate_declared([entry])
    assert any(message in e for e in errors), errors


def test_validate_duplicate_per_mechanism() -> None:
    errors, _ = ks.validate_declared([{"name": "u", "password": "p"}, {"name": "u", "password": "q"}])
    assert errors == ["user #2 (u): declared twice for SCRAM-SHA-512"]
    errors, _ = ks.validate_declared([{"name": "u", "password": "p"},
                                      {"name": "u", "password": "q", "mechanism": "SCRAM-SHA-256"}])
    assert errors == []


# --- fingerprints and state ------------------------------------------------------------------------

def test_fingerprint_depends_on_every_field_and_the_key() -> None:
    base = ks.fingerprint(KEY, "u", "SCRAM-SHA-512", 8192, "pw")
    assert len(base) == 64 and "pw" not in base
    assert base == ks.fingerprint(KEY, "u", "SCRAM-SHA-512", 8192, "pw")
    others = {ks.fingerprint(KEY, "v", "SCRAM-SHA-512", 8192, "pw"),
              ks.fingerprint(KEY, "u", "SCRAM-SHA-256", 8192, "pw"),
              ks.fingerprint(KEY, "u", "SCRAM-SHA-512", 4096, "pw"),
              ks.fingerprint(KEY, "u", "SCRAM-SHA-512", 8192, "pW"),
              ks.fingerprint("ff" * 32, "u", "SCRAM-SHA-512", 8192, "pw")}
    assert base not in others and len(others) == 5
    # No ambiguity between fields: ("ab", "c") is not ("a", "bc").
    assert ks.fingerprint(KEY, "a", "SCRAM-SHA-512", 8192, "bc") != ks.fingerprint(KEY, "ab", "SCRAM-SHA-512",
                                                                                   8192, "c")


def test_state_round_trip_and_refusals() -> None:
    state = state_for(users({"name": "alice", "password": "pw"}))
    assert ks.parse_state(ks.state_text(state)) == state
    assert ks.new_key() != ks.new_key() and len(ks.new_key()) == 64
    for bad in ('{"version": 2, "key": "%s", "credentials": {}}' % KEY,
                '{"version": 1, "key": "short", "credentials": {}}',
                '{"version": 1, "key": "%s", "credentials": []}' % KEY, "[]"):
        with pytest.raises(ValueError):
            ks.parse_state(bad)
    with pytest.raises(ValueError):
        ks.parse_state("not json")


def test_state_file_holds_no_password() -> None:
    declared = users({"name": "alice", "password": "Very-Secret-1"})
    plans = ks.plan_users(declared, {}, ks.empty_state(), KEY)
    text = ks.state_text(ks.updated_state(ks.empty_state(), KEY, {"alice"}, plans))
    assert "Very-Secret-1" not in text
    assert json.loads(text)["credentials"]["alice"]["SCRAM-SHA-512"] == plans[0]["fingerprint"]


# --- plan ----------------------------------------------------------------------------------------

def test_plan_create_update_unchanged() -> None:
    declared = users(
        {"name": "alice", "password": "a-pw"},                                    # 8192 in Kafka, recorded
        {"name": "bob", "password": "b-pw", "iterations": 4096},                  # 4096 in Kafka, password changed
        {"name": "admin", "password": "adm", "iterations": 8192},                 # 4096 in Kafka: iterations
        {"name": "carol", "password": "c-pw"},                                    # missing
        {"name": "svc.orders-1@example.com", "password": "s", "mechanism": "SCRAM-SHA-512"},  # other mech only
    )
    state = state_for([declared[0], dict(declared[1], password="old")])
    plans = {p["name"]: p for p in ks.plan_users(declared, actual(), state, KEY)}
    assert plans["alice"]["action"] == "none"
    assert (plans["bob"]["action"], plans["bob"]["reason"]) == ("update", "password changed")
    assert (plans["admin"]["action"], plans["admin"]["reason"]) == ("update", "iterations 4096 -> 8192")
    assert (plans["carol"]["action"], plans["carol"]["reason"]) == ("create", "SCRAM-SHA-512 credential missing")
    assert plans["svc.orders-1@example.com"]["action"] == "create"


def test_plan_without_state_sets_existing_passwords_once() -> None:
    declared = users({"name": "alice", "password": "a-pw"})
    key = ks.new_key()
    plans = ks.plan_users(declared, actual(), ks.empty_state(), key)
    assert plans[0]["action"] == "update" and "no fingerprint recorded" in plans[0]["reason"]
    state = ks.updated_state(ks.empty_state(), key, {"alice"}, plans)
    assert ks.plan_users(declared, actual(), state, key)[0]["action"] == "none"


def test_plan_ignores_fingerprints_made_with_another_key() -> None:
    declared = users({"name": "alice", "password": "a-pw"})
    state = state_for(declared, key="ff" * 32)
    assert ks.plan_users(declared, actual(), state, KEY)[0]["action"] == "update"


def test_undeclared_users_and_credentials() -> None:
    declared = users({"name": "alice", "password": "a"}, {"name": "bob", "password": "b"})
    extra = ks.undeclared_credentials(declared, actual())
    assert extra == [("admin", "SCRAM-SHA-512"), ("bob", "SCRAM-SHA-256"),
                     ("svc.orders-1@example.com", "SCRAM-SHA-256")]


def test_apply_order_puts_the_command_config_user_last() -> None:
    declared = users({"name": "admin", "password": "a"}, {"name": "zed", "password": "z"},
                     {"name": "bob", "password": "b"})
    plans = ks.plan_users(declared, {}, ks.empty_state(), KEY)
    assert [p["name"] for p in ks.apply_order(plans, "admin")] == ["bob", "zed", "admin"]
    assert [p["name"] for p in ks.apply_order(plans, None)] == ["admin", "bob", "zed"]


def test_updated_state_keeps_declared_and_drops_undeclared_users() -> None:
    declared = users({"name": "alice", "password": "a"}, {"name": "carol", "password": "c"})
    state = state_for(users({"name": "alice", "password": "a"}, {"name": "gone", "password": "g"}))
    plans = ks.plan_users(declared, {"alice": {"SCRAM-SHA-512": 8192}}, state, KEY)
    new = ks.updated_state(state, KEY, {"alice", "carol"}, [p for p in plans if p["action"] != "none"])
    assert set(new["credentials"]) == {"alice", "carol"}
    assert new["credentials"]["alice"] == state["credentials"]["alice"]


def test_diff_shows_names_mechanisms_iterations_never_passwords() -> None:
    declared = users({"name": "alice", "password": "Secret-A"}, {"name": "bob", "password": "Secret-B",
                                                                 "iterations": 4096},
                     {"name": "carol", "password": "Secret-C"})
    plans = ks.plan_users(declared, actual(), state_for(declared[:1]), KEY)
    before, after = ks.diff_texts(actual(), plans)
    assert "Secret" not in before + after
    assert "bob SCRAM-SHA-512 iterations=4096\n" in before
    assert "bob SCRAM-SHA-512 iterations=4096 (password set)\n" in after
    assert "carol" not in before and "carol SCRAM-SHA-512 iterations=8192\n" in after
    assert "alice SCRAM-SHA-512 iterations=8192\n" in after
    assert after.splitlines() == sorted(after.splitlines())


# --- the credential file and error output ----------------------------------------------------------

def test_credential_file_text_has_no_brackets() -> None:
    # --add-config strips '[' ']' from values, --add-config-file does not: Kafka then fails to parse them
    # (scram_error_invalid_credential.txt), so the file carries the bare value.
    assert ks.credential_file_text("SCRAM-SHA-512", 8192, "P=w:d#!") == \
        "SCRAM-SHA-512=iterations=8192,password=P=w:d#!\n"
    assert ks.credential_file_text("SCRAM-SHA-256", 4096, "pä€😀") == \
        "SCRAM-SHA-256=iterations=4096,password=p\\u00e4\\u20ac\\ud83d\\ude00\n"


def test_redact_invalid_credential_output() -> None:
    out = fixture("scram_error_invalid_credential.txt")
    assert "Dummy-pw9" in out  # Kafka really echoes it
    summary = ks.error_summary(ks.redact(out, ["Dummy-pw9"]))
    assert "Dummy-pw9" not in summary
    assert summary == "Invalid credential property SCRAM_SHA_512=[iterations=8192,password=********]"
    # Even a password the module does not know is redacted when printed as password=...
    assert "Other" not in ks.redact("x password=Other-pw]", [])


def test_error_summaries() -> None:
    assert ks.error_summary(fixture("scram_error_too_many_iterations.txt")).endswith(
        "Caused by: org.apache.kafka.common.errors.UnacceptableCredentialException: Too many iterations")
    auth = ks.error_summary(fixture("scram_error_auth_failed.txt"))
    assert "SaslAuthenticationException" in auth and "\tat " not in auth
    assert "ClusterAuthorizationException: Cluster authorization failed." in ks.error_summary(
        fixture("scram_error_not_authorized.txt"))


def test_jaas_username() -> None:
    text = ('security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.'
            'security.scram.ScramLoginModule required username="admin" password="x";\n')
    assert ks.jaas_username(text) == "admin"
    assert ks.jaas_username("security.protocol=SSL\n") is None
