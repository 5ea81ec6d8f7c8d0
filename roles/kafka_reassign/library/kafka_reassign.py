#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Move partition replicas between Kafka brokers (rebalance, drain a broker, unregister it) through the CLIs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_reassign
short_description: Rebalance partition replicas over the brokers, drain a broker, unregister a broker
description:
  - C(action=rebalance) computes a reassignment that gives every broker of C(brokers) its share of the replicas
    (per topic, then overall: the counts differ by at most one) with as few replica moves as possible, and
    balances the preferred leaders (first replica) by reordering replicas, which moves no data.
  - C(action=drain) moves every replica off the brokers of C(drain_brokers) onto the least loaded of the others,
    and nothing else (plus the preferred-leader balance). It is refused, before any change, when a drained
    broker is a voter of the quorum, or when the remaining brokers can not hold a topic's replication factor or
    its min.insync.replicas.
  - Both run C(kafka-reassign-partitions --execute --throttle), poll C(--verify) every C(poll_interval) seconds
    until every partition is done or C(deadline) passes (each poll's "done/total" is in C(progress), and in
    C(progress_file) as it happens), then make sure no replication throttle is left on any broker or topic
    (C(--verify) clears them on completion; any left are deleted with C(kafka-configs)), and ask for a
    preferred leader election of the moved partitions.
  - A reassignment already running (an earlier run that hit its deadline) is waited for first, then planned
    again from where the cluster stands: re-running resumes.
  - C(action=unregister) runs C(kafka-cluster unregister --id) for each of C(drain_brokers) (which must be
    stopped for good); a broker that is not registered is no change.
  - Check mode runs only the describe calls and returns the plan.
version_added: "1.0.0"
author: kraftwerk
options:
  action:
    description: What to do.
    type: str
    choices: [rebalance, drain, unregister]
    default: rebalance
  bootstrap_server:
    description: Kafka bootstrap server(s), C(host:port[,host:port...]).
    type: str
    required: true
  command_config:
    description: Client properties file for the CLIs (TLS, SASL), e.g. C(/etc/kafka/admin.properties).
    type: path
  bin_dir:
    description: Directory of the CLI launchers (kafka-topics, kafka-configs, kafka-reassign-partitions,
      kafka-metadata-quorum, kafka-leader-election, kafka-cluster).
    type: path
    default: /usr/local/bin
  brokers:
    description: Node ids of every broker of the cluster (the inventory's). Replicas go only to these, minus
      C(drain_brokers); a replica found on another broker fails the module (decommission that broker first).
    type: list
    elements: int
    default: []
  drain_brokers:
    description: Node ids to empty (C(drain)) or unregister (C(unregister)).
    type: list
    elements: int
    default: []
  topics:
    description: Only these topics (default every topic, the internal ones included). C(drain) always looks at
      every topic.
    type: list
    elements: str
    default: []
  throttle:
    description: Replication throttle during the moves, bytes per second, for leaders and followers.
    type: int
    default: 52428800
  deadline:
    description: Seconds to wait for the reassignment to complete before failing (the moves go on; re-run to
      wait again).
    type: int
    default: 3600
  poll_interval:
    description: Seconds between two C(--verify) polls.
    type: int
    default: 10
  balance_leaders:
    description: Reorder replicas so that each broker is the preferred leader of its share of partitions.
    type: bool
    default: true
  elect_leaders:
    description: After the moves, run a preferred leader election for the partitions whose first replica changed.
    type: bool
    default: true
  default_min_insync_replicas:
    description: The brokers' min.insync.replicas, for topics whose describe shows none.
    type: int
    default: 1
  progress_file:
    description: A file to append one line per poll to (C(tail -f) it during a long move).
    type: path
  timeout:
    description: Seconds allowed for each CLI call.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: Spread the replicas over every broker
  kafka_reassign:
    action: rebalance
    bootstrap_server: "{{ kafka_cluster_client_bootstrap }}"
    command_config: /etc/kafka/admin.properties
    brokers: [1, 2, 3, 4]
    throttle: 52428800
  run_once: true
"""

RETURN = r"""
plan:
  description: The partitions whose replicas change, with C(before) and C(after) replica lists.
  returned: always
  type: list
  elements: dict
moves:
  description: Number of replicas copied to another broker (reorders move no data and are not counted).
  returned: always
  type: int
replicas_before:
  description: Replica count per broker id before.
  returned: always
  type: dict
replicas_after:
  description: Replica count per broker id after the plan.
  returned: always
  type: dict
progress:
  description: One line per C(--verify) poll, "done/total partitions".
  returned: always
  type: list
  elements: str
throttles_removed:
  description: Throttle configs the module deleted itself after the moves (C(--verify) had left them).
  returned: always
  type: list
  elements: str
unregistered:
  description: Node ids unregistered by this run (C(action=unregister)).
  returned: always
  type: list
  elements: int
commands:
  description: The mutating command lines run.
  returned: always
  type: list
  elements: list
"""

import json
import os
import re
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kraftwerk_cli import CliError, run_cli, run_cli_output

THROTTLE_BROKER_KEYS = ("leader.replication.throttled.rate", "follower.replication.throttled.rate",
                        "replica.alter.log.dirs.io.max.bytes.per.second")
THROTTLE_TOPIC_KEYS = ("leader.replication.throttled.replicas", "follower.replication.throttled.replicas")

_FIELD_RE = re.compile(r"^\s*([A-Za-z ]+?):\s?(.*)$")
_CONFIGS_HEADER_RE = re.compile(r"^Dynamic configs for (broker|topic) (\S+) are:\s*$")
_CONFIG_ENTRY_RE = re.compile(r"^\s+([^=\s]+)=(.*?) sensitive=(?:true|false) synonyms=\{.*\}\s*$")
_VERIFY_RE = re.compile(r"^Reassignment of partition (\S+)-(\d+) (is completed|is still in progress|failed)")
_LIST_RE = re.compile(r"^(\S+)-(\d+): replicas: ")


# --------------------------------------------------------------------------------------------------
# Pure functions: parsing, planning, refusal rules. No I/O; unit-tested against captured CLI output.
# --------------------------------------------------------------------------------------------------

def _fields(line):
    out = {}
    for part in line.strip("\r\n").split("\t"):
        m = _FIELD_RE.match(part)
        if m and part.strip():
            out[m.group(1).strip()] = m.group(2).strip()
    return out


def _ids(text):
    return [int(x) for x in (text or "").split(",") if x.strip().isdigit()]


def parse_describe(text):
    """`kafka-topics --describe` -> {topic: {"replication_factor", "configs": {k: v}, "partitions": {p: {...}}}}.

    Each partition: replicas (ordered; the first is the preferred leader), isr, leader (-1 or None when none).
    """
    topics = {}
    for line in text.splitlines():
        if line.startswith("Topic:"):
            f = _fields(line)
            if "PartitionCount" not in f:
                continue
            configs = {}
            for item in (f.get("Configs") or "").split(","):
                if "=" in item:
                    key, value = item.split("=", 1)
                    configs[key.strip()] = value.strip()
                elif configs and item:
                    # a value holding commas (cleanup.policy=compact,delete) continues the previous key
                    last = list(configs)[-1]
                    configs[last] += "," + item
            topics[f["Topic"]] = {"replication_factor": int(f.get("ReplicationFactor", "0") or 0),
                                  "configs": configs, "partitions": {}}
        elif line.startswith("\tTopic:") or line.startswith(" Topic:"):
            f = _fields(line)
            name = f.get("Topic")
            if name in topics and f.get("Partition", "").isdigit():
                leader = f.get("Leader", "")
                topics[name]["partitions"][int(f["Partition"])] = {
                    "replicas": _ids(f.get("Replicas")), "isr": _ids(f.get("Isr")),
                    "leader": int(leader) if leader.lstrip("-").isdigit() else None}
    return topics


def assignment_of(topics, only=()):
    """{(topic, partition): [replicas]} of the described topics (all, or those named in `only`)."""
    return {(t, p): list(info["replicas"]) for t, tinfo in topics.items() if not only or t in only
            for p, info in tinfo["partitions"].items()}


def parse_verify(text):
    """`--verify` output -> {"done": n, "total": n, "pending": ["t-p"], "failed": ["t-p"]}."""
    done, pending, failed = [], [], []
    for line in text.splitlines():
        m = _VERIFY_RE.match(line.strip())
        if not m:
            continue
        name = "%s-%s" % (m.group(1), m.group(2))
        {"is completed": done, "is still in progress": pending, "failed": failed}[m.group(3)].append(name)
    return {"done": len(done), "total": len(done) + len(pending) + len(failed), "pending": pending,
            "failed": failed}


def parse_list(text):
    """`--list` output -> the partitions being reassigned now, as "topic-partition"."""
    out = []
    for line in text.splitlines():
        m = _LIST_RE.match(line.strip())
        if m:
            out.append("%s-%s" % (m.group(1), m.group(2)))
    return out


def parse_configs(text):
    """`kafka-configs --describe --entity-type brokers|topics` -> {("broker"|"topic", name): {key: value}}."""
    out, current = {}, None
    for line in text.splitlines():
        header = _CONFIGS_HEADER_RE.match(line)
        if header:
            current = (header.group(1), header.group(2))
            out[current] = {}
            continue
        entry = _CONFIG_ENTRY_RE.match(line)
        if entry and current is not None:
            out[current][entry.group(1)] = entry.group(2)
    return out


def throttles_left(configs):
    """{("broker"|"topic", name): [throttle keys still set]} from parse_configs output (empty when clean)."""
    left = {}
    for (kind, name), values in configs.items():
        keys = THROTTLE_BROKER_KEYS if kind == "broker" else THROTTLE_TOPIC_KEYS
        found = [k for k in keys if k in values]
        if found:
            left[(kind, name)] = found
    return left


def parse_voters(text):
    """`kafka-metadata-quorum describe --status` -> voter ids (3.9's JSON list, or the older "[1,2,3]")."""
    for line in text.splitlines():
        if line.startswith("CurrentVoters:"):
            value = line.split(":", 1)[1]
            ids = re.findall(r'"id":\s*(\d+)', value)
            return sorted(int(i) for i in (ids or re.findall(r"\d+", value)))
    return []


def replica_counts(assignment, brokers=()):
    counts = Counter({b: 0 for b in brokers})
    for replicas in assignment.values():
        counts.update(replicas)
    return dict(sorted(counts.items()))


def drain_refusals(drain, brokers, voters, topics, default_min_isr):
    """Why draining `drain` (node ids) must not start; [] when it may. Reads no cluster: the caller passes them."""
    errors = []
    for node in sorted(drain):
        if node in voters:
            errors.append("node %d is a controller, a voter of the static quorum (%s): the quorum can't change, so "
                          "only a broker-only node can be decommissioned" % (node, ",".join(map(str, voters))))
        if node not in brokers:
            errors.append("node %d is not one of the cluster's brokers (%s)" % (node, ",".join(map(str, brokers))))
    remaining = sorted(set(brokers) - set(drain))
    for name, info in sorted(topics.items()):
        rf = max([len(p["replicas"]) for p in info["partitions"].values()] or [info["replication_factor"]])
        min_isr = int(info["configs"].get("min.insync.replicas", default_min_isr))
        if rf > len(remaining):
            errors.append("topic %s has replication factor %d but only %d broker(s) would remain (%s)"
                          % (name, rf, len(remaining), ",".join(map(str, remaining))))
        elif min_isr > len(remaining):
            errors.append("topic %s has min.insync.replicas=%d but only %d broker(s) would remain: producers with "
                          "acks=all would be refused" % (name, min_isr, len(remaining)))
    return errors


def plan_assignment(current, brokers, drain=(), balance_replicas=True, balance_leaders=True):
    """The new assignment: (errors, {(topic, partition): [replicas]} of the partitions that change).

    current: {(topic, partition): [replicas]}. brokers: every broker's id; drain: those to empty. Replicas on a
    drained broker move to the least loaded eligible broker (overall, then in the topic) in the same position. With
    balance_replicas, replicas then move from the most to the least loaded broker, per topic and overall, until
    the counts differ by at most one: each move is one replica, and none is made that is not needed. With
    balance_leaders, replicas are reordered (no data moves) so that preferred leaders are spread the same way.
    Deterministic: the same input gives the same plan, and a balanced cluster gives an empty one.
    """
    eligible = sorted(set(brokers) - set(drain))
    errors = []
    if not eligible:
        return ["no broker would be left to hold the replicas"], {}
    for key, replicas in sorted(current.items()):
        unknown = [b for b in replicas if b not in brokers and b not in drain]
        if unknown:
            errors.append("%s-%d has replicas on broker(s) %s, which the inventory does not list: add them back, or "
                          "decommission them first" % (key[0], key[1], ",".join(map(str, unknown))))
        if len(set(replicas)) > len(eligible):
            errors.append("%s-%d has %d replicas but only %d broker(s) can hold them"
                          % (key[0], key[1], len(set(replicas)), len(eligible)))
    if errors:
        return errors, {}

    new = {key: list(replicas) for key, replicas in current.items()}
    total = Counter({b: 0 for b in eligible})
    per_topic = Counter()
    for (topic, _), replicas in new.items():
        for b in replicas:
            if b in total:
                total[b] += 1
                per_topic[(topic, b)] += 1

    def place(key, index, dst):
        src = new[key][index]
        new[key][index] = dst
        if src in total:
            total[src] -= 1
            per_topic[(key[0], src)] -= 1
        total[dst] += 1
        per_topic[(key[0], dst)] += 1

    # 1. Off the drained brokers (and nothing else), the most constrained partitions first; then each of these
    #    replicas, which moves anyway, may go elsewhere if that evens the counts out (no extra data moves).
    slots = [(key, index) for key in sorted(new) for index, broker in enumerate(new[key]) if broker not in total]
    slots.sort(key=lambda slot: (len([b for b in eligible if b not in new[slot[0]]]), slot))
    for key, index in slots:
        candidates = [b for b in eligible if b not in new[key]]
        place(key, index, min(candidates, key=lambda b: (total[b], per_topic[(key[0], b)], b)))
    improved = True
    while improved:
        improved = False
        for key, index in slots:
            dst = new[key][index]
            better = [b for b in eligible if b not in new[key] and total[dst] - total[b] >= 2]
            if better:
                place(key, index, min(better, key=lambda b: (total[b], per_topic[(key[0], b)], b)))
                improved = True

    if balance_replicas:
        topics = sorted({key[0] for key in new})
        # 2. Per topic: most loaded -> least loaded, one replica at a time.
        for topic in topics:
            keys = sorted(k for k in new if k[0] == topic)
            while True:
                hi = max(eligible, key=lambda b: (per_topic[(topic, b)], total[b], -b))
                lo = min(eligible, key=lambda b: (per_topic[(topic, b)], total[b], b))
                if per_topic[(topic, hi)] - per_topic[(topic, lo)] <= 1:
                    break
                movable = [k for k in keys if hi in new[k] and lo not in new[k]]
                # Prefer a follower replica: the leader's partition keeps its leader.
                key = min(movable, key=lambda k: (new[k].index(hi) == 0, k))
                place(key, new[key].index(hi), lo)
        # 3. Overall, without breaking the per-topic balance when avoidable.
        while True:
            hi = max(eligible, key=lambda b: (total[b], -b))
            lo = min(eligible, key=lambda b: (total[b], b))
            if total[hi] - total[lo] <= 1:
                break
            movable = [k for k in sorted(new) if hi in new[k] and lo not in new[k]]
            key = min(movable, key=lambda k: (-(per_topic[(k[0], hi)] - per_topic[(k[0], lo)]),
                                              new[k].index(hi) == 0, k))
            place(key, new[key].index(hi), lo)

    if balance_leaders:
        leaders = Counter({b: 0 for b in eligible})
        for replicas in new.values():
            leaders[replicas[0]] += 1
        changed = True
        while changed:
            changed = False
            for key in sorted(new):
                replicas = new[key]
                best = min(replicas, key=lambda b: (leaders[b], replicas.index(b)))
                if leaders[replicas[0]] - leaders[best] >= 2:
                    leaders[replicas[0]] -= 1
                    leaders[best] += 1
                    new[key] = [best] + [b for b in replicas if b != best]
                    changed = True

    return [], {key: replicas for key, replicas in sorted(new.items()) if replicas != current[key]}


def reassignment_json(plan):
    return json.dumps({"version": 1, "partitions": [
        {"topic": t, "partition": p, "replicas": replicas} for (t, p), replicas in sorted(plan.items())]})


def election_json(keys):
    return json.dumps({"partitions": [{"topic": t, "partition": p} for t, p in sorted(keys)]})


def count_moves(current, plan):
    return sum(len(set(replicas) - set(current[key])) for key, replicas in plan.items())


def plan_report(current, plan):
    return [{"topic": t, "partition": p, "before": current[(t, p)], "after": replicas}
            for (t, p), replicas in sorted(plan.items())]


def unregister_outcome(returncode, output):
    """(changed, error) of `kafka-cluster unregister`: a broker that is not registered is no change."""
    if returncode == 0:
        return True, None
    if "BrokerIdNotRegisteredException" in output or "was not registered" in output:
        return False, None
    return False, output


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, params, tmpdir):
        self.p = params
        self.tmpdir = tmpdir
        self.commands = []
        self.progress = []

    def tool(self, name):
        return os.path.join(self.p["bin_dir"], name)

    def base(self, name, config_option="--command-config"):
        argv = [self.tool(name), "--bootstrap-server", self.p["bootstrap_server"]]
        if self.p.get("command_config"):
            argv += [config_option, self.p["command_config"]]
        return argv

    def run(self, argv, mutating=False):
        if mutating:
            self.commands.append(argv)
        return run_cli(argv, self.p["timeout"])

    def describe_topics(self):
        return self.run(self.base("kafka-topics") + ["--describe"])

    def list_reassignments(self):
        return self.run(self.base("kafka-reassign-partitions") + ["--list"])

    def configs(self, kind):
        return self.run(self.base("kafka-configs") + ["--describe", "--entity-type", kind])

    def quorum_status(self):
        return self.run(self.base("kafka-metadata-quorum") + ["describe", "--status"])

    def write(self, name, text):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def execute(self, plan):
        path = self.write("reassignment.json", reassignment_json(plan))
        self.run(self.base("kafka-reassign-partitions") + ["--reassignment-json-file", path, "--execute",
                                                          "--throttle", str(self.p["throttle"])], mutating=True)
        return path

    def verify(self, path):
        return parse_verify(self.run(self.base("kafka-reassign-partitions")
                                     + ["--reassignment-json-file", path, "--verify"]))

    def note(self, line):
        stamped = "%s %s" % (time.strftime("%H:%M:%S"), line)
        self.progress.append(stamped)
        if self.p.get("progress_file"):
            with open(self.p["progress_file"], "a", encoding="utf-8") as handle:
                handle.write(stamped + "\n")

    def wait_verify(self, path, deadline_at):
        while True:
            status = self.verify(path)
            self.note("reassignment: %d/%d partitions done%s" % (
                status["done"], status["total"],
                "; failed: " + ",".join(status["failed"]) if status["failed"] else ""))
            if status["failed"]:
                raise CliError("the reassignment of %s failed (see the brokers' logs); the throttle is kept until "
                               "--verify sees it done" % ", ".join(status["failed"]))
            if status["total"] and status["done"] == status["total"]:
                return status
            if time.monotonic() >= deadline_at:
                raise CliError("the reassignment did not finish within %d s: %d/%d partitions done, still moving: %s. "
                               "It goes on with its throttle; re-run to wait for it (the run resumes) and clear the "
                               "throttle" % (self.p["deadline"], status["done"], status["total"],
                                             ", ".join(status["pending"][:10])))
            time.sleep(self.p["poll_interval"])

    def wait_idle(self, deadline_at):
        """Wait until no reassignment runs (one started earlier, e.g. by a run that hit its deadline)."""
        while True:
            running = parse_list(self.list_reassignments())
            if not running:
                return
            self.note("waiting for a reassignment already in progress: %d partition(s) (%s)"
                      % (len(running), ", ".join(running[:5])))
            if time.monotonic() >= deadline_at:
                raise CliError("a reassignment already in progress (%s) did not finish within %d s; nothing new "
                               "was started" % (", ".join(running[:10]), self.p["deadline"]))
            time.sleep(self.p["poll_interval"])

    def remove_throttles(self, left):
        removed = []
        for (kind, name), keys in sorted(left.items()):
            self.run(self.base("kafka-configs") + ["--alter", "--entity-type", kind + "s", "--entity-name", name,
                                                   "--delete-config", ",".join(keys)], mutating=True)
            removed += ["%s %s: %s" % (kind, name, key) for key in keys]
        return removed

    def elect(self, keys):
        path = self.write("election.json", election_json(keys))
        argv = self.base("kafka-leader-election", "--admin.config") + ["--election-type", "PREFERRED",
                                                                        "--path-to-json-file", path]
        self.commands.append(argv)
        # A failed election is not fatal: the controller's auto leader rebalance does it later.
        try:
            rc, output = run_cli_output(argv, self.p["timeout"])
        except CliError as exc:
            return str(exc)
        lines = output.strip().splitlines()
        return "" if rc == 0 else (lines[-1] if lines else "rc=%d" % rc)

    def unregister(self, node):
        argv = [self.tool("kafka-cluster"), "unregister", "--bootstrap-server", self.p["bootstrap_server"],
                "--id", str(node)]
        if self.p.get("command_config"):
            argv += ["--config", self.p["command_config"]]
        rc, output = run_cli_output(argv, self.p["timeout"])
        changed, error = unregister_outcome(rc, output)
        if changed:
            self.commands.append(argv)
        if error:
            raise CliError("%s failed (rc=%d): %s" % (" ".join(argv), rc, error.strip().splitlines()[:3]))
        return changed


def read_state(runner, want_voters):
    calls = {"topics": runner.describe_topics, "list": runner.list_reassignments,
             "brokers": lambda: runner.configs("brokers"), "topic_configs": lambda: runner.configs("topics")}
    if want_voters:
        calls["quorum"] = runner.quorum_status
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type="str", default="rebalance", choices=["rebalance", "drain", "unregister"]),
            bootstrap_server=dict(type="str", required=True),
            command_config=dict(type="path"),
            bin_dir=dict(type="path", default="/usr/local/bin"),
            brokers=dict(type="list", elements="int", default=[]),
            drain_brokers=dict(type="list", elements="int", default=[]),
            topics=dict(type="list", elements="str", default=[]),
            throttle=dict(type="int", default=52428800),
            deadline=dict(type="int", default=3600),
            poll_interval=dict(type="int", default=10),
            balance_leaders=dict(type="bool", default=True),
            elect_leaders=dict(type="bool", default=True),
            default_min_insync_replicas=dict(type="int", default=1),
            progress_file=dict(type="path"),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, plan=[], moves=0, replicas_before={}, replicas_after={}, progress=[],
                  throttles_removed=[], unregistered=[], commands=[])
    problems = []
    if not p["bootstrap_server"].strip():
        problems.append("bootstrap_server must not be empty")
    if p["throttle"] < 1024:
        problems.append("throttle must be at least 1024 bytes/s (got %d)" % p["throttle"])
    if p["deadline"] < 1 or p["poll_interval"] < 1 or p["timeout"] < 1:
        problems.append("deadline, poll_interval and timeout must be at least 1 second")
    if p["action"] in ("drain", "unregister") and not p["drain_brokers"]:
        problems.append("drain_brokers must name the node(s) to %s" % p["action"])
    if p["action"] != "unregister" and not p["brokers"]:
        problems.append("brokers must list the node ids of every broker")
    if problems:
        module.fail_json(msg="; ".join(problems) + ". Nothing was changed.", **result)

    runner = Runner(p, module.tmpdir)

    if p["action"] == "unregister":
        if module.check_mode:
            result["msg"] = "would unregister node(s) %s (when still registered)" % p["drain_brokers"]
            module.exit_json(**result)
        try:
            result["unregistered"] = [n for n in p["drain_brokers"] if runner.unregister(n)]
        except CliError as exc:
            result["commands"] = runner.commands
            module.fail_json(msg=str(exc), **result)
        result.update(changed=bool(result["unregistered"]), commands=runner.commands)
        module.exit_json(**result)

    deadline_at = time.monotonic() + p["deadline"]
    try:
        state = read_state(runner, want_voters=p["action"] == "drain")
        if parse_list(state["list"]):
            if module.check_mode:
                result["msg"] = "a reassignment is in progress (%s): the plan is from the current replicas" \
                    % ", ".join(parse_list(state["list"])[:5])
            else:
                runner.wait_idle(deadline_at)
                state = read_state(runner, want_voters=p["action"] == "drain")
    except CliError as exc:
        module.fail_json(msg="cannot read the cluster: %s. Nothing was changed." % exc, **result)

    topics = parse_describe(state["topics"])
    only = () if p["action"] == "drain" else tuple(p["topics"])
    current = assignment_of(topics, only)
    if p["action"] == "drain":
        voters = parse_voters(state["quorum"])
        refusals = drain_refusals(p["drain_brokers"], p["brokers"], voters, topics, p["default_min_insync_replicas"])
        if refusals:
            module.fail_json(msg="refusing to drain node(s) %s: %s. Nothing was changed."
                             % (",".join(map(str, p["drain_brokers"])), "; ".join(refusals)), errors=refusals, **result)
    errors, plan = plan_assignment(current, p["brokers"], p["drain_brokers"] if p["action"] == "drain" else (),
                                   balance_replicas=p["action"] == "rebalance", balance_leaders=p["balance_leaders"])
    if errors:
        module.fail_json(msg="; ".join(errors) + ". Nothing was changed.", errors=errors, **result)

    after = {**current, **plan}
    left = throttles_left({**parse_configs(state["brokers"]), **parse_configs(state["topic_configs"])})
    result.update(plan=plan_report(current, plan), moves=count_moves(current, plan),
                  replicas_before=replica_counts(current, p["brokers"]),
                  replicas_after=replica_counts(after, [b for b in p["brokers"]
                                                        if p["action"] != "drain" or b not in p["drain_brokers"]]),
                  changed=bool(plan) or bool(left))
    if module._diff and plan:
        result["diff"] = {"before_header": "replicas per broker", "after_header": "replicas per broker",
                          "before": json.dumps(result["replicas_before"], indent=1) + "\n",
                          "after": json.dumps(result["replicas_after"], indent=1) + "\n"}
    if module.check_mode or not result["changed"]:
        if left:
            result["throttles_removed"] = ["(would remove) %s %s: %s" % (k[0], k[1], ", ".join(v))
                                           for k, v in sorted(left.items())]
        module.exit_json(**result)

    try:
        if plan:
            runner.note("reassigning %d partition(s), %d replica move(s), throttle %d B/s"
                        % (len(plan), result["moves"], p["throttle"]))
            path = runner.execute(plan)
            runner.wait_verify(path, deadline_at)
        left = throttles_left({**parse_configs(runner.configs("brokers")),
                               **parse_configs(runner.configs("topics"))})
        result["throttles_removed"] = runner.remove_throttles(left)
        led = [key for key, replicas in plan.items() if replicas[0] != current[key][0]]
        if led and p["elect_leaders"]:
            problem = runner.elect(led)
            if problem:
                runner.note("preferred leader election: %s (the controller's auto leader rebalance will do it)"
                            % problem)
    except CliError as exc:
        result.update(progress=runner.progress, commands=runner.commands)
        module.fail_json(msg=str(exc), **result)
    result.update(progress=runner.progress, commands=runner.commands)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
