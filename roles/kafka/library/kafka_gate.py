#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Health gates around a Kafka node's restart, through the kafka-topics and kafka-metadata-quorum CLIs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_gate
short_description: Wait until a Kafka (KRaft) node may be restarted, or until it is back in sync
description:
  - Polls the cluster until a condition holds, and fails with the reason when it does not hold within
    C(timeout) seconds. Each poll starts the C(kafka-topics --describe) and
    C(kafka-metadata-quorum describe --replication) JVMs concurrently on the host the module runs on.
  - C(phase=before) (safe to stop C(node_id)) holds when every partition keeps at least
    min(min.insync.replicas, replication factor) in-sync replicas without the node, and, when the node is
    a voter, when the other voters that are caught up with the quorum leader still form a majority.
  - C(phase=after) (back in sync) holds when the quorum has a leader, the node is in the ISR of every
    partition it holds a replica of, and, when it is a voter, it is caught up with the leader.
  - C(phase=healthy) holds when the quorum has a leader, every voter is caught up and no partition is
    under-replicated or without a leader.
version_added: "1.0.0"
author: kraftwerk
options:
  phase:
    description: Which condition to wait for.
    type: str
    choices: [before, after, healthy]
    required: true
  node_id:
    description: The node about to be restarted (before) or just restarted (after). Not used by C(healthy).
    type: int
  bootstrap_server:
    description: Kafka bootstrap server(s), C(host:port[,host:port...]), of the brokers.
    type: str
    required: true
  default_min_insync_replicas:
    description: The brokers' min.insync.replicas, for topics that do not override it.
    type: int
    default: 1
  max_voter_lag:
    description: A voter whose metadata log is at most this many records behind the leader counts as caught up.
    type: int
    default: 20
  max_voter_fetch_age_ms:
    description:
      - A follower voter counts as caught up only if it fetched from the leader within this many milliseconds
        (measured on the leader's clock). Without it, a voter that stopped seconds ago would still count until the
        leader appended C(max_voter_lag) more records.
    type: int
    default: 10000
  kafka_topics_bin:
    description: Path of the kafka-topics launcher.
    type: path
    default: /usr/local/bin/kafka-topics
  kafka_metadata_quorum_bin:
    description: Path of the kafka-metadata-quorum launcher.
    type: path
    default: /usr/local/bin/kafka-metadata-quorum
  command_config:
    description: Optional client properties file passed as C(--command-config) (TLS, SASL).
    type: path
  timeout:
    description: Seconds to wait for the condition before failing.
    type: int
    default: 300
  interval:
    description: Seconds between two polls.
    type: int
    default: 2
notes:
  - In check mode the module does not wait; it reports the condition's state from one poll.
"""

EXAMPLES = r"""
- name: Wait until node 2 may be restarted
  kafka_gate:
    phase: before
    node_id: 2
    bootstrap_server: "10.0.0.1:9092,10.0.0.2:9092"
    default_min_insync_replicas: 2
"""

RETURN = r"""
ok:
  description: Whether the condition held.
  returned: always
  type: bool
reasons:
  description: Why the condition did not hold at the last poll (empty when it held).
  returned: always
  type: list
  elements: str
polls:
  description: How many polls were made.
  returned: always
  type: int
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
quorum:
  description: The voters and observers at the last poll (node id, lag, status).
  returned: always
  type: list
  elements: dict
"""

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

_FIELD_RE = re.compile(r"^\s*([A-Za-z ]+?):\s?(.*)$")
MAX_REASONS = 8


# --------------------------------------------------------------------------------------------------
# Pure functions (unit-tested against captured CLI output).
# --------------------------------------------------------------------------------------------------

def _fields(line):
    out = {}
    for part in line.strip("\r\n").split("\t"):
        m = _FIELD_RE.match(part)
        if m:
            out[m.group(1).strip()] = m.group(2).strip()
    return out


def _ids(text):
    return [int(x) for x in (text or "").split(",") if x.strip().lstrip("-").isdigit()]


def parse_partitions(text, default_min_isr):
    """`kafka-topics --describe` -> [{topic, partition, leader, replicas, isr, min_isr}]."""
    min_isr = {}
    rows = []
    for line in text.splitlines():
        if line.startswith("Topic:"):
            f = _fields(line)
            configs = dict(kv.split("=", 1) for kv in f.get("Configs", "").split(",") if "=" in kv)
            value = configs.get("min.insync.replicas", "")
            min_isr[f.get("Topic")] = int(value) if value.isdigit() else default_min_isr
        elif line.lstrip(" \t").startswith("Topic:") and "Partition:" in line:
            f = _fields(line)
            if not f.get("Partition", "").isdigit():
                continue
            leader = f.get("Leader", "-1")
            rows.append({
                "topic": f["Topic"],
                "partition": int(f["Partition"]),
                "leader": int(leader) if leader.lstrip("-").isdigit() else -1,
                "replicas": _ids(f.get("Replicas")),
                "isr": _ids(f.get("Isr")),
                "min_isr": min_isr.get(f["Topic"], default_min_isr),
            })
    return rows


def parse_quorum(text):
    """`kafka-metadata-quorum describe --replication` -> [{node_id, lag, status}] (voters and observers)."""
    header = None
    rows = []
    for line in text.splitlines():
        cols = line.split()
        if not cols:
            continue
        if cols[0] == "NodeId":
            header = cols
            continue
        if header is None or not cols[0].isdigit() or len(cols) < len(header):
            continue
        row = dict(zip(header, cols))
        lag = row.get("Lag", "")
        fetched = row.get("LastFetchTimestamp", "")
        rows.append({
            "node_id": int(cols[0]),
            "lag": int(lag) if lag.lstrip("-").isdigit() else None,
            "last_fetch_ms": int(fetched) if fetched.isdigit() else None,
            "status": row.get("Status", ""),
        })
    return rows


def _name(p):
    return "%s-%d" % (p["topic"], p["partition"])


def evaluate(phase, node_id, partitions, quorum, max_lag, max_fetch_age_ms=10000):
    """Reasons why the condition does not hold (empty list: it holds).

    A follower voter is caught up when its lag is at most max_lag records and it fetched from the leader within
    max_fetch_age_ms (both timestamps are the leader's clock: its own row's LastFetchTimestamp is its "now"). The
    lag alone would count a voter that stopped seconds ago as caught up until the leader appended max_lag more
    records."""
    reasons = []
    voters = [v for v in quorum if v["status"] in ("Leader", "Follower")]
    leader = [v for v in voters if v["status"] == "Leader"]
    if not leader:
        reasons.append("the metadata quorum has no leader")
    now = leader[0].get("last_fetch_ms") if leader else None

    def _caught_up(voter):
        if voter["status"] == "Leader":
            return True
        if voter["lag"] is None or not 0 <= voter["lag"] <= max_lag:
            return False
        fetched = voter.get("last_fetch_ms")
        return now is None or fetched is None or now - fetched <= max_fetch_age_ms

    lagging = [v["node_id"] for v in voters if not _caught_up(v)]
    if phase == "before":
        if node_id in [v["node_id"] for v in voters]:
            others = [v for v in voters if v["node_id"] != node_id and _caught_up(v)]
            if len(others) < len(voters) // 2 + 1:
                reasons.append(
                    "stopping voter %d leaves %d caught-up voter(s) of %d: no majority (lagging: %s)"
                    % (node_id, len(others), len(voters), lagging or "none"))
        short = [p for p in partitions
                 if len([b for b in p["isr"] if b != node_id]) < min(p["min_isr"], len(p["replicas"]))]
        if short:
            reasons.append(
                "stopping node %d would leave %d partition(s) below min.insync.replicas: %s"
                % (node_id, len(short), ", ".join(
                    "%s (isr %s, min %d)" % (_name(p), p["isr"], p["min_isr"]) for p in short[:MAX_REASONS])))
    elif phase == "after":
        if node_id in [v["node_id"] for v in voters] and node_id in lagging:
            reasons.append("voter %d is not caught up with the quorum leader yet" % node_id)
        behind = [p for p in partitions if node_id in p["replicas"] and node_id not in p["isr"]]
        if behind:
            reasons.append("node %d is not in the ISR of %d partition(s) yet: %s" % (
                node_id, len(behind), ", ".join(_name(p) for p in behind[:MAX_REASONS])))
    else:
        if lagging:
            reasons.append("voters not caught up: %s" % lagging)
        urp = [p for p in partitions if len(p["isr"]) < len(p["replicas"]) or p["leader"] < 0]
        if urp:
            reasons.append("%d partition(s) under-replicated or offline: %s" % (
                len(urp), ", ".join(_name(p) for p in urp[:MAX_REASONS])))
    offline = [p for p in partitions if p["leader"] < 0]
    if offline and phase != "healthy":
        reasons.append("%d partition(s) have no leader: %s" % (
            len(offline), ", ".join(_name(p) for p in offline[:MAX_REASONS])))
    return reasons


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------

def _run(argv, timeout):
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False, universal_newlines=True)
    except subprocess.TimeoutExpired:
        return None, "%s timed out after %ds" % (argv[0], timeout)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        return None, "%s failed (rc %d): %s" % (argv[0], proc.returncode, lines[-1] if lines else "no output")
    return proc.stdout, None


def poll(params, timeout):
    extra = ["--command-config", params["command_config"]] if params.get("command_config") else []
    topics = [params["kafka_topics_bin"], "--bootstrap-server", params["bootstrap_server"]] + extra + ["--describe"]
    quorum = ([params["kafka_metadata_quorum_bin"], "--bootstrap-server", params["bootstrap_server"]] + extra
              + ["describe", "--replication"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        t = pool.submit(_run, topics, timeout)
        q = pool.submit(_run, quorum, timeout)
        (t_out, t_err), (q_out, q_err) = t.result(), q.result()
    errors = [e for e in (t_err, q_err) if e]
    if errors:
        return errors, [], False
    partitions = parse_partitions(t_out, params["default_min_insync_replicas"])
    voters = parse_quorum(q_out)
    return evaluate(params["phase"], params.get("node_id"), partitions, voters, params["max_voter_lag"],
                    params["max_voter_fetch_age_ms"]), voters, True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            phase=dict(type="str", required=True, choices=["before", "after", "healthy"]),
            node_id=dict(type="int"),
            bootstrap_server=dict(type="str", required=True),
            default_min_insync_replicas=dict(type="int", default=1),
            max_voter_lag=dict(type="int", default=20),
            max_voter_fetch_age_ms=dict(type="int", default=10000),
            kafka_topics_bin=dict(type="path", default="/usr/local/bin/kafka-topics"),
            kafka_metadata_quorum_bin=dict(type="path", default="/usr/local/bin/kafka-metadata-quorum"),
            command_config=dict(type="path"),
            timeout=dict(type="int", default=300),
            interval=dict(type="int", default=2),
        ),
        required_if=[("phase", "before", ["node_id"]), ("phase", "after", ["node_id"])],
        supports_check_mode=True,
    )
    p = module.params
    started = time.monotonic()
    deadline = started + p["timeout"]
    polls = 0
    last_read = None  # the reasons of the last poll that could read the cluster
    while True:
        polls += 1
        call_timeout = max(10, min(120, int(deadline - time.monotonic())))
        reasons, voters, read = poll(p, call_timeout)
        waited = round(time.monotonic() - started, 1)
        if read:
            last_read = reasons
        elif last_read:
            # This poll could not read the cluster (a CLI timed out, say): keep what the last read said.
            reasons = reasons + ["last read of the cluster: " + "; ".join(last_read)]
        if not reasons:
            module.exit_json(changed=False, ok=True, reasons=[], polls=polls, waited=waited, quorum=voters)
        if module.check_mode:
            module.exit_json(changed=False, ok=False, reasons=reasons, polls=polls, waited=waited, quorum=voters)
        if time.monotonic() + p["interval"] >= deadline:
            what = {"before": "node %s may be restarted" % p.get("node_id"),
                    "after": "node %s is back in sync" % p.get("node_id"),
                    "healthy": "the cluster is healthy"}[p["phase"]]
            module.fail_json(
                msg="Gate failed: after %ss, still not true that %s: %s. The play stops here."
                    % (waited, what, "; ".join(reasons)),
                ok=False, reasons=reasons, polls=polls, waited=waited, quorum=voters)
        time.sleep(p["interval"])


if __name__ == "__main__":
    main()
