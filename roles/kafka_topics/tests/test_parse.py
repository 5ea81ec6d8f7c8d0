"""Unit tests for the kafka_topic module's pure functions.

The fixtures in fixtures/ are real output of the Kafka 3.9.1 CLIs (TopicCommand, ConfigCommand) against a
single-node KRaft broker, captured unedited:
  describe_three_topics.txt / configs_three_topics.txt: three topics, one without overrides, one with a
      comma in a config value (cleanup.policy=compact,delete);
  describe_after_alter.txt / configs_after_alter.txt: the same after growing beta.dlq to 4 partitions and
      altering configs with --add-config and --add-config-file;
  error_*.txt: stdout+stderr of failed calls.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

_spec = importlib.util.spec_from_file_location("kafka_topic", HERE.parent / "library" / "kafka_topic.py")
assert _spec is not None and _spec.loader is not None
kt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kt)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- kafka-topics --describe ---------------------------------------------------------------------

def test_describe_three_topics() -> None:
    topics = kt.parse_topics_describe(fixture("describe_three_topics.txt"))
    assert set(topics) == {"alpha", "beta.dlq", "gamma_x"}
    assert topics["alpha"]["partitions"] == 3
    assert topics["alpha"]["replication_factor"] == 1
    assert topics["alpha"]["topic_id"] == "1-sW7zCwSHKq0SwU4uSAQA"
    assert topics["alpha"]["replicas"] == {0: [1], 1: [1], 2: [1]}
    assert topics["beta.dlq"]["partitions"] == 1
    assert topics["gamma_x"]["partitions"] == 2


def test_describe_after_growing_partitions() -> None:
    topics = kt.parse_topics_describe(fixture("describe_after_alter.txt"))
    assert topics["beta.dlq"]["partitions"] == 4
    assert sorted(topics["beta.dlq"]["replicas"]) == [0, 1, 2, 3]


def test_describe_partition_count_matches_partition_lines() -> None:
    for name in ("describe_three_topics.txt", "describe_after_alter.txt"):
        for topic in kt.parse_topics_describe(fixture(name)).values():
            assert len(topic["replicas"]) == topic["partitions"]
            assert all(len(r) == topic["replication_factor"] for r in topic["replicas"].values())


def test_describe_ignores_noise_lines() -> None:
    # A real warning line of TopicCommand and a real log4j line around the real output.
    noise = ("WARNING: Due to limitations in metric names, topics with a period ('.') or underscore ('_') could "
             "collide. To avoid issues it is best to use either, but not both.\n"
             "[2026-11-24 16:32:37,827] WARN something (org.apache.kafka.clients.NetworkClient)\n")
    text = noise + fixture("describe_three_topics.txt") + noise
    assert kt.parse_topics_describe(text) == kt.parse_topics_describe(fixture("describe_three_topics.txt"))


def test_describe_nothing() -> None:
    # `--describe --topic <regex> --if-exists` matching nothing prints nothing (rc 0).
    assert kt.parse_topics_describe("") == {}


def test_describe_tolerates_crlf_and_reassignment_fields() -> None:
    line = fixture("describe_three_topics.txt").splitlines()[0] + "\r"
    part = "\tTopic: gamma_x\tPartition: 0\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2\tAdding Replicas: 3\t" \
           "Removing Replicas: \tElr: \tLastKnownElr: "
    topics = kt.parse_topics_describe(line + "\n" + part + "\n")
    assert topics["gamma_x"]["partitions"] == 2
    assert topics["gamma_x"]["replicas"] == {0: [1, 2, 3]}


# --- kafka-configs --describe --entity-type topics -----------------------------------------------

def test_configs_three_topics() -> None:
    configs = kt.parse_configs_describe(fixture("configs_three_topics.txt"))
    assert configs == {
        "beta.dlq": {},
        "alpha": {"min.insync.replicas": "1", "retention.ms": "86400000"},
        "gamma_x": {"cleanup.policy": "compact,delete", "message.timestamp.type": "LogAppendTime"},
    }


def test_configs_after_alter() -> None:
    configs = kt.parse_configs_describe(fixture("configs_after_alter.txt"))
    assert configs["beta.dlq"] == {"cleanup.policy": "compact,delete", "retention.ms": "604800000"}
    assert configs["gamma_x"] == {"cleanup.policy": "compact,delete", "message.timestamp.type": "CreateTime",
                                  "min.insync.replicas": "1"}


def test_configs_sensitive_value_is_unknown() -> None:
    text = ("Dynamic configs for topic t are:\n"
            "  some.secret=null sensitive=true synonyms={DYNAMIC_TOPIC_CONFIG:some.secret=null}\n")
    assert kt.parse_configs_describe(text) == {"t": {"some.secret": None}}


def test_configs_value_with_spaces_and_equals() -> None:
    text = ("Dynamic configs for topic t are:\n"
            "  x.y=a=b c sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:x.y=a=b c}\n")
    assert kt.parse_configs_describe(text) == {"t": {"x.y": "a=b c"}}


# --- CLI error output ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("error_shrink.txt", "The topic beta.dlq currently has 4 partition(s); 2 would not be an increase."),
    ("error_create_exists.txt", "Topic 'alpha' already exists."),
    ("error_rf_too_big.txt", "only 1 broker(s) are registered"),
    ("error_alter_bad_value.txt", "Invalid value abc for configuration retention.ms"),
])
def test_error_summary_keeps_the_cli_message(name: str, expected: str) -> None:
    summary = kt._error_summary(fixture(name))
    assert expected in summary
    assert "\tat " not in summary and "CompletableFuture" not in summary


# --- names, values, regex, properties ------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "test-topic", "test-topic.dlq", "A_b-C.9", "x" * 249, "..."])
def test_legal_names(name: str) -> None:
    assert kt.topic_name_error(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a b", "a/b", "a:b", "x" * 250, "tópico"])
def test_illegal_names(name: str) -> None:
    assert "not legal" in kt.topic_name_error(name)


@pytest.mark.parametrize(("value", "expected"), [
    (2, "2"), ("2", "2"), (" 2 ", "2"), (True, "true"), (False, "false"), (0.5, "0.5"),
    ("compact,delete", "compact,delete"),
])
def test_normalize_config_value(value: object, expected: str) -> None:
    assert kt.normalize_config_value(value) == expected


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_normalize_config_value_rejects_non_scalars(value: object) -> None:
    with pytest.raises(ValueError):
        kt.normalize_config_value(value)


def test_topics_regex_matches_exactly_the_names() -> None:
    names = ["test-topic", "test-topic.dlq", "a_b"]
    pattern = re.compile(kt.topics_regex(names))
    for name in names:
        assert pattern.fullmatch(name)
    for other in ["test-topicXdlq", "test-topic.dlq2", "a_bc", "xtest-topic", "test"]:
        assert not pattern.fullmatch(other)


def test_properties_text_escapes() -> None:
    text = kt.properties_text({"a.b": "x=y:z", "c": " lead\\back\ttab", "d": "ümlaut", "e": "#!"})
    assert text == ("a.b=x\\=y\\:z\n"
                    "c=\\ lead\\\\back\\ttab\n"
                    "d=\\u00fcmlaut\n"
                    "e=\\#\\!\n")
    text.encode("ascii")


def test_create_config_args_defers_values_with_equals() -> None:
    args, rest = kt.create_config_args({"min.insync.replicas": "2", "cleanup.policy": "compact,delete",
                                        "weird": "a=b", "empty": ""})
    assert args == ["--config", "cleanup.policy=compact,delete", "--config", "min.insync.replicas=2"]
    assert rest == {"weird": "a=b", "empty": ""}


# --- validation and planning ---------------------------------------------------------------------

def topic(name: str, partitions: int, rf: int, configs: dict[str, object] | None = None) -> dict[str, object]:
    return {"name": name, "partitions": partitions, "replication_factor": rf, "configs": configs or {}}


def test_validate_declared() -> None:
    errors, topics = kt.validate_declared([topic("a.b", 1, 1, {"x": 5}), topic("a_b", 1, 1), topic("a.b", 1, 1),
                                           topic("z", 0, 0), topic("bad name", 1, 1), topic("n", 1, 1, {"l": [1]})])
    assert topics[0] == {"name": "a.b", "partitions": 1, "replication_factor": 1, "configs": {"x": "5"}}
    text = "\n".join(errors)
    assert "a.b and a_b collide" in text
    assert "a.b is declared twice" in text
    assert "z: partitions must be at least 1" in text
    assert "z: replication_factor must be at least 1" in text
    assert "'bad name' is not legal" in text
    assert "config l must be" in text


def plan(declared: list[dict[str, object]], describe: str = "describe_three_topics.txt",
         configs: str = "configs_three_topics.txt") -> tuple[list[str], list[dict[str, object]]]:
    errors, normalised = kt.validate_declared(declared)
    assert not errors
    return kt.plan_topics(normalised, kt.parse_topics_describe(fixture(describe)),
                          kt.parse_configs_describe(fixture(configs)))


def test_plan_no_change() -> None:
    errors, plans = plan([topic("alpha", 3, 1, {"min.insync.replicas": 1, "retention.ms": 86400000}),
                          topic("gamma_x", 2, 1, {"cleanup.policy": "compact,delete"}),
                          topic("beta.dlq", 1, 1)])
    assert errors == []
    assert [p["action"] for p in plans] == ["none", "none", "none"]
    assert plans[0]["before"] == {"state": "present", "partitions": 3, "replication_factor": 1,
                                  "configs": {"min.insync.replicas": "1", "retention.ms": "86400000"}}
    assert plans[0]["before"] == plans[0]["after"]


def test_plan_create_grow_and_configs() -> None:
    errors, plans = plan([topic("new", 6, 1, {"min.insync.replicas": 1}),
                          topic("alpha", 5, 1, {"retention.ms": 1000}),
                          topic("beta.dlq", 1, 1, {"cleanup.policy": "compact"})])
    assert errors == []
    new, alpha, beta = plans
    assert new["action"] == "create" and new["before"] == {"state": "absent"}
    assert new["set_configs"] == {"min.insync.replicas": "1"}
    assert alpha["action"] == "update" and alpha["grow_to"] == 5
    assert alpha["set_configs"] == {"retention.ms": "1000"}
    assert alpha["changes"] == ["partitions 3 -> 5", "config retention.ms: 86400000 -> 1000"]
    # Only declared keys are managed: alpha's min.insync.replicas override is not in before/after.
    assert alpha["before"]["configs"] == {"retention.ms": "86400000"}
    assert beta["changes"] == ["config cleanup.policy: (default) -> compact"]
    assert beta["grow_to"] is None


def test_plan_refuses_shrink_and_rf_change() -> None:
    errors, plans = plan([topic("alpha", 2, 1), topic("beta.dlq", 4, 3), topic("new", 1, 1)])
    assert errors[0].startswith("topic alpha has 3 partitions, declared 2: Kafka cannot shrink partitions; ")
    assert errors[1].startswith("topic beta.dlq has replication factor 1, declared 3: changing the replication "
                                "factor needs a partition reassignment")
    assert len(errors) == 2
    assert [p["name"] for p in plans] == ["alpha", "beta.dlq", "new"]


def test_plan_topic_missing_from_configs_output_has_no_overrides() -> None:
    errors, plans = plan([topic("alpha", 3, 1, {"retention.ms": 86400000})], configs="configs_three_topics.txt")
    assert plans[0]["action"] == "none"
    _, normalised = kt.validate_declared([topic("alpha", 3, 1, {"retention.ms": 1})])
    errors, plans = kt.plan_topics(normalised, kt.parse_topics_describe(fixture("describe_three_topics.txt")), {})
    assert plans[0]["set_configs"] == {"retention.ms": "1"}
