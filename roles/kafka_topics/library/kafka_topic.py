#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Keep Kafka topics as declared, through the kafka-topics and kafka-configs CLIs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_topic
short_description: Keep Apache Kafka topics as declared (create, grow partitions, set configs)
description:
  - Creates the declared topics that are missing, grows the partition count of those that have fewer
    partitions than declared, and sets the declared topic configs that differ from the topic's dynamic
    overrides (config source C(DYNAMIC_TOPIC_CONFIG)).
  - Only the declared config keys are managed; other overrides and the broker defaults are never touched.
  - Every declared topic is validated against the cluster before anything is changed. A declared partition
    count lower than the actual one (Kafka cannot shrink partitions) or a declared replication factor that
    differs from the actual one (that needs a partition reassignment) fails the module with no change to
    any topic.
  - Shells out to the Kafka CLI launchers on the host it runs on. On the path where nothing changes it starts
    two JVMs, concurrently - one C(kafka-topics --describe) for the declared topics and one
    C(kafka-configs --describe --entity-type topics) - and only the first when no declared topic has configs.
  - Topics that are not declared are never touched, and topics are never deleted.
version_added: "1.0.0"
author: kraftwerk
options:
  bootstrap_server:
    description: Kafka bootstrap server(s), C(host:port[,host:port...]).
    type: str
    required: true
  topics:
    description: The declared topics.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Topic name (1 to 249 of C([a-zA-Z0-9._-]), not C(.) nor C(..)).
        type: str
        required: true
      partitions:
        description: Partition count, at least 1. Can only grow.
        type: int
        required: true
      replication_factor:
        description: Replication factor, at least 1. Used at creation; checked afterwards, never changed.
        type: int
        required: true
      configs:
        description:
          - Topic configs (key -> scalar value). Integers and booleans are compared as Kafka prints them.
          - Only these keys are managed.
        type: dict
        default: {}
  kafka_topics_bin:
    description: Path of the kafka-topics launcher (runs org.apache.kafka.tools.TopicCommand).
    type: path
    default: /usr/local/bin/kafka-topics
  kafka_configs_bin:
    description: Path of the kafka-configs launcher (runs kafka.admin.ConfigCommand).
    type: path
    default: /usr/local/bin/kafka-configs
  command_config:
    description: Optional client properties file passed as C(--command-config) to both CLIs (TLS, SASL).
    type: path
  timeout:
    description: Seconds allowed for each CLI call before the module fails.
    type: int
    default: 120
notes:
  - Supports check mode (nothing but the two describe calls is run) and diff mode (before/after per topic).
  - Config values are compared as strings, exactly as Kafka stores them (C(compact,delete) and
    C(delete,compact) differ).
"""

EXAMPLES = r"""
- name: Keep the declared topics
  kafka_topic:
    bootstrap_server: "kafka-a:9092"
    topics:
      - name: orders
        partitions: 6
        replication_factor: 3
        configs:
          min.insync.replicas: 2
          retention.ms: 604800000
  run_once: true
"""

RETURN = r"""
topics:
  description: One entry per declared topic, in declaration order.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Topic name., type: str}
    action: {description: "C(create), C(update) or C(none): what was done (or would be, in check mode).", type: str}
    changes: {description: Human-readable list of the changes., type: list, elements: str}
    before:
      description: >-
        The topic before: C(state) absent or present, partitions, replication_factor and the current
        values of the declared configs (null when not overridden).
      type: dict
    after: {description: The topic as declared., type: dict}
commands:
  description: The mutating CLI command lines run (empty in check mode and when nothing changed).
  returned: always
  type: list
  elements: list
errors:
  description: The validation errors, when the module refused to act.
  returned: failure
  type: list
  elements: str
"""

import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kraftwerk_cli import CliError, run_cli

TOPIC_NAME_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

_FIELD_RE = re.compile(r"^\s*([A-Za-z ]+?):\s?(.*)$")
_CONFIGS_HEADER_RE = re.compile(r"^Dynamic configs for topic (\S+) are:\s*$")
_CONFIG_ENTRY_RE = re.compile(r"^\s+([^=\s]+)=(.*) sensitive=(true|false) synonyms=\{(.*)\}\s*$")


# --------------------------------------------------------------------------------------------------
# Pure functions: parsing, normalising, planning. No I/O; unit-tested against captured CLI output.
# --------------------------------------------------------------------------------------------------

def topic_name_error(name):
    """Return why `name` is not a legal Kafka topic name, or None."""
    if not isinstance(name, str) or not TOPIC_NAME_RE.match(name):
        return ("topic name %r is not legal for Kafka: 1 to 249 characters of a-z A-Z 0-9 . _ -" % (name,))
    if name in (".", ".."):
        return "topic name %r is not legal for Kafka: '.' and '..' are reserved" % (name,)
    return None


def _split_tab_fields(line):
    """'Topic: a\tPartitionCount: 3\t...' -> {'Topic': 'a', 'PartitionCount': '3', ...}."""
    fields = {}
    for part in line.strip("\r\n").split("\t"):
        if not part.strip():
            continue
        m = _FIELD_RE.match(part)
        if m:
            fields[m.group(1).strip()] = m.group(2).strip()
    return fields


def _int_list(text):
    return [int(x) for x in text.split(",") if x.strip().lstrip("-").isdigit()]


def parse_topics_describe(text):
    """Parse `kafka-topics --describe` output.

    Returns {topic: {"topic_id", "partitions", "replication_factor", "replicas": {partition: [broker ids]}}}.
    Lines that are neither a topic summary nor a partition line (warnings, log noise) are ignored.
    """
    topics = {}
    for line in text.splitlines():
        if line.startswith("Topic:"):
            fields = _split_tab_fields(line)
            if "PartitionCount" not in fields or "ReplicationFactor" not in fields:
                continue
            topics[fields["Topic"]] = {
                "topic_id": fields.get("TopicId", ""),
                "partitions": int(fields["PartitionCount"]),
                "replication_factor": int(fields["ReplicationFactor"]),
                "replicas": {},
            }
        elif line.startswith("\tTopic:") or line.startswith(" Topic:"):
            fields = _split_tab_fields(line)
            name = fields.get("Topic")
            if name in topics and fields.get("Partition", "").isdigit():
                topics[name]["replicas"][int(fields["Partition"])] = _int_list(fields.get("Replicas", ""))
    return topics


def parse_configs_describe(text):
    """Parse `kafka-configs --describe --entity-type topics` output (no --all).

    Returns {topic: {key: value}} holding only the topic's dynamic overrides (DYNAMIC_TOPIC_CONFIG).
    Topics without overrides map to {}. A sensitive value (printed as null) maps to None.
    """
    configs = {}
    current = None
    for line in text.splitlines():
        header = _CONFIGS_HEADER_RE.match(line)
        if header:
            current = header.group(1)
            configs[current] = {}
            continue
        entry = _CONFIG_ENTRY_RE.match(line)
        if entry is None or current is None:
            continue
        key, value, sensitive, synonyms = entry.groups()
        if synonyms and not synonyms.startswith("DYNAMIC_TOPIC_CONFIG:"):
            # Without --all only dynamic topic overrides are listed; anything else is not ours to compare.
            continue
        configs[current][key] = None if sensitive == "true" else value
    return configs


def normalize_config_value(value):
    """Declared value -> the string Kafka prints. Raises ValueError for non-scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    raise ValueError("must be a string, a number or a boolean, got %s" % type(value).__name__)


def topics_regex(names):
    """A --topic regex (full match, Java syntax) for exactly these names."""
    return "|".join(name.replace(".", "\\.") for name in names)


def validate_declared(topics):
    """Check the declaration itself. Returns (errors, normalised topics)."""
    errors = []
    normalised = []
    seen = {}
    for index, topic in enumerate(topics):
        name = topic.get("name")
        err = topic_name_error(name)
        if err:
            errors.append(err)
            continue
        if name in seen:
            errors.append("topic %s is declared twice" % name)
            continue
        collision = name.replace(".", "_")
        for other in seen:
            if other.replace(".", "_") == collision:
                errors.append("topics %s and %s collide in Kafka's metric names ('.' and '_' are the same there): "
                              "Kafka refuses to create the second one" % (other, name))
        seen[name] = index
        if topic.get("partitions") is None or topic["partitions"] < 1:
            errors.append("topic %s: partitions must be at least 1, got %s" % (name, topic.get("partitions")))
        if topic.get("replication_factor") is None or topic["replication_factor"] < 1:
            errors.append("topic %s: replication_factor must be at least 1, got %s"
                          % (name, topic.get("replication_factor")))
        configs = {}
        for key, value in (topic.get("configs") or {}).items():
            try:
                configs[str(key).strip()] = normalize_config_value(value)
            except ValueError as exc:
                errors.append("topic %s: config %s %s" % (name, key, exc))
        normalised.append({"name": name, "partitions": topic.get("partitions"),
                           "replication_factor": topic.get("replication_factor"), "configs": configs})
    return errors, normalised


def plan_topics(declared, actual, actual_configs):
    """Compare the declaration with the cluster.

    declared: normalised topics (validate_declared). actual: parse_topics_describe output.
    actual_configs: parse_configs_describe output (may lack topics, then they count as having no overrides).
    Returns (errors, plans); when errors is non-empty nothing must be changed. Each plan:
    {name, action: create|update|none, changes: [str], grow_to: int|None, set_configs: {k: v},
     before: dict, after: dict}.
    """
    errors = []
    plans = []
    for topic in declared:
        name = topic["name"]
        after = {"state": "present", "partitions": topic["partitions"],
                 "replication_factor": topic["replication_factor"], "configs": dict(sorted(topic["configs"].items()))}
        current = actual.get(name)
        if current is None:
            changes = ["create with %d partition(s), replication factor %d"
                       % (topic["partitions"], topic["replication_factor"])]
            changes += ["set config %s=%s" % (k, v) for k, v in sorted(topic["configs"].items())]
            plans.append({"name": name, "action": "create", "changes": changes, "grow_to": None,
                          "set_configs": dict(topic["configs"]), "before": {"state": "absent"}, "after": after})
            continue
        overrides = actual_configs.get(name, {})
        before = {"state": "present", "partitions": current["partitions"],
                  "replication_factor": current["replication_factor"],
                  "configs": {k: overrides.get(k) for k in sorted(topic["configs"])}}
        if topic["partitions"] < current["partitions"]:
            errors.append("topic %s has %d partitions, declared %d: Kafka cannot shrink partitions; "
                          "declare at least %d (or recreate the topic, losing its data)"
                          % (name, current["partitions"], topic["partitions"], current["partitions"]))
        if topic["replication_factor"] != current["replication_factor"]:
            errors.append("topic %s has replication factor %d, declared %d: changing the replication factor "
                          "needs a partition reassignment (kafka-reassign-partitions), which this module does not "
                          "do; declare %d or reassign first"
                          % (name, current["replication_factor"], topic["replication_factor"],
                             current["replication_factor"]))
        changes = []
        grow_to = None
        if topic["partitions"] > current["partitions"]:
            grow_to = topic["partitions"]
            changes.append("partitions %d -> %d" % (current["partitions"], grow_to))
        set_configs = {}
        for key, value in sorted(topic["configs"].items()):
            if overrides.get(key) != value:
                set_configs[key] = value
                changes.append("config %s: %s -> %s" % (key, overrides.get(key, "(default)"), value))
        plans.append({"name": name, "action": "update" if changes else "none", "changes": changes,
                      "grow_to": grow_to, "set_configs": set_configs, "before": before, "after": after})
    return errors, plans


def create_config_args(configs):
    """Split configs for `kafka-topics --create`: (['--config', 'k=v', ...], {k: v left for kafka-configs}).

    TopicCommand splits each --config on '=' and insists on exactly two parts, so values that contain '='
    (or are empty) cannot go through it; they are set right after creation with kafka-configs.
    """
    args = []
    rest = {}
    for key, value in sorted(configs.items()):
        if "=" in value or value == "":
            rest[key] = value
        else:
            args += ["--config", "%s=%s" % (key, value)]
    return args, rest


def _escape_properties(text, is_key):
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\f":
            out.append("\\f")
        elif ch in "=:#!" or (ch == " " and (is_key or i == 0)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            out.append("\\u%04x" % ord(ch) if ord(ch) <= 0xFFFF else
                       "".join("\\u%04x" % u for u in _utf16_units(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _utf16_units(ch):
    code = ord(ch) - 0x10000
    return (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def properties_text(configs):
    """A java.util.Properties file (ISO-8859-1 safe, every value escaped) for --add-config-file."""
    return "".join("%s=%s\n" % (_escape_properties(k, True), _escape_properties(v, False))
                   for k, v in sorted(configs.items()))


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------

def _run(argv, timeout):
    """One CLI call through the shared runner (plugins/module_utils/kraftwerk_cli.py)."""
    return run_cli(argv, timeout, summarize=_error_summary)


def _error_summary(output):
    """The CLI's own error message rather than its Java stack trace and log lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error while executing")]
    # TopicCommand: "Error while executing topic command : <reason>" says it all.
    with_reason = [line for line in errors if " : " in line]
    if with_reason:
        return with_reason[0]
    # ConfigCommand: the reason is in the first exception line; drop a log4j prefix.
    exceptions = [re.sub(r"^\[[^\]]*\] [A-Z]+ ", "", line) for line in lines
                  if "Exception:" in line and not line.startswith("at ")]
    picked = errors[:1] + exceptions[:1]
    return " | ".join(picked or lines[-5:])


class Runner:
    def __init__(self, params, tmpdir):
        self.bootstrap = params["bootstrap_server"]
        self.topics_bin = params["kafka_topics_bin"]
        self.configs_bin = params["kafka_configs_bin"]
        self.command_config = params.get("command_config")
        self.timeout = params["timeout"]
        self.tmpdir = tmpdir
        self.commands = []

    def _base(self, binary):
        argv = [binary, "--bootstrap-server", self.bootstrap]
        if self.command_config:
            argv += ["--command-config", self.command_config]
        return argv

    def describe_topics(self, names):
        return _run(self._base(self.topics_bin) + ["--describe", "--topic", topics_regex(names), "--if-exists"],
                    self.timeout)

    def describe_configs(self):
        return _run(self._base(self.configs_bin) + ["--describe", "--entity-type", "topics"], self.timeout)

    def _mutate(self, argv):
        self.commands.append(argv)
        return _run(argv, self.timeout)

    def create(self, name, partitions, replication_factor, config_args):
        self._mutate(self._base(self.topics_bin) + ["--create", "--topic", name, "--partitions", str(partitions),
                                                    "--replication-factor", str(replication_factor)] + config_args)

    def grow(self, name, partitions):
        self._mutate(self._base(self.topics_bin) + ["--alter", "--topic", name, "--partitions", str(partitions)])

    def set_configs(self, name, configs):
        fd, path = tempfile.mkstemp(prefix="kafka-topic-", suffix=".properties", dir=self.tmpdir)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(properties_text(configs))
            self._mutate(self._base(self.configs_bin) + ["--alter", "--entity-type", "topics", "--entity-name", name,
                                                         "--add-config-file", path])
        finally:
            os.unlink(path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bootstrap_server=dict(type="str", required=True),
            topics=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                partitions=dict(type="int", required=True),
                replication_factor=dict(type="int", required=True),
                configs=dict(type="dict", default={}),
            )),
            kafka_topics_bin=dict(type="path", default="/usr/local/bin/kafka-topics"),
            kafka_configs_bin=dict(type="path", default="/usr/local/bin/kafka-configs"),
            command_config=dict(type="path"),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not params["bootstrap_server"].strip():
        module.fail_json(msg="bootstrap_server must not be empty")
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second")

    errors, declared = validate_declared(params["topics"])
    if errors:
        module.fail_json(msg="invalid topic declaration: " + "; ".join(errors) + "; no topic was changed",
                         errors=errors, topics=[], commands=[])
    if not declared:
        module.exit_json(changed=False, topics=[], commands=[])

    for binary in (params["kafka_topics_bin"], params["kafka_configs_bin"]):
        if not os.access(binary, os.X_OK):
            module.fail_json(msg="Kafka CLI %s not found or not executable" % binary, topics=[], commands=[])

    runner = Runner(params, module.tmpdir)
    names = [t["name"] for t in declared]
    need_configs = any(t["configs"] for t in declared)
    try:
        # The two describes are independent: run the JVMs side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            topics_future = pool.submit(runner.describe_topics, names)
            configs_future = pool.submit(runner.describe_configs) if need_configs else None
            actual = parse_topics_describe(topics_future.result())
            actual_configs = parse_configs_describe(configs_future.result()) if configs_future else {}
    except CliError as exc:
        module.fail_json(msg="cannot read the topics: %s" % exc, topics=[], commands=[])

    errors, plans = plan_topics(declared, actual, actual_configs)
    results = [{k: p[k] for k in ("name", "action", "changes", "before", "after")} for p in plans]
    if errors:
        module.fail_json(msg="; ".join(errors) + ". No topic was changed.", errors=errors, topics=results, commands=[])

    changing = [p for p in plans if p["action"] != "none"]
    diff = [{"before_header": "topic %s" % p["name"], "after_header": "topic %s" % p["name"],
             "before": p["before"], "after": p["after"]} for p in changing]
    result = dict(changed=bool(changing), topics=results, commands=runner.commands)
    if module._diff:
        result["diff"] = diff
    if module.check_mode or not changing:
        module.exit_json(**result)

    done = []
    try:
        for plan in changing:
            if plan["action"] == "create":
                args, rest = create_config_args(plan["set_configs"])
                runner.create(plan["name"], plan["after"]["partitions"], plan["after"]["replication_factor"], args)
                if rest:
                    runner.set_configs(plan["name"], rest)
            else:
                if plan["grow_to"] is not None:
                    runner.grow(plan["name"], plan["grow_to"])
                if plan["set_configs"]:
                    runner.set_configs(plan["name"], plan["set_configs"])
            done.append(plan["name"])
    except CliError as exc:
        result["changed"] = bool(done)
        result["msg"] = ("%s. Already applied: %s" % (exc, ", ".join(done) if done else "nothing"))
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
