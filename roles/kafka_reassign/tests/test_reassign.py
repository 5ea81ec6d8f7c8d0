"""Unit tests for the kafka_reassign module's pure functions: parsing, the plan, the refusal rules.

The fixtures in fixtures/ are real output of the Kafka 3.9.1 CLIs against a 3 combined + 1 broker-only KRaft
cluster on loopback (tests/kafka_cluster.py), captured unedited: topics orders (6 partitions, RF 2, on brokers
1-3) and audit.log (2 partitions, RF 3, min.insync.replicas=2); a throttled reassignment of 3 partitions
onto broker 4 (execute, verify while it ran and once done, the throttle configs it set and after --verify
cleared them); a slow one with --list and --describe while it ran; the errors of a reassignment to an unknown
broker and of unregistering one.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

_spec = importlib.util.spec_from_file_location("kafka_reassign", HERE.parent / "library" / "kafka_reassign.py")
assert _spec is not None and _spec.loader is not None
kr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kr)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- parsing ---------------------------------------------------------------------------------------

def test_describe_before() -> None:
    topics = kr.parse_describe(fixture("describe_before.txt"))
    assert set(topics) == {"orders", "audit.log"}
    assert topics["orders"]["replication_factor"] == 2
    assert topics["orders"]["partitions"][2] == {"replicas": [3, 1], "isr": [3, 1], "leader": 3}
    assert topics["audit.log"]["configs"] == {"min.insync.replicas": "2"}
    assert kr.assignment_of(topics)[("audit.log", 1)] == [2, 3, 4]
    assert set(kr.assignment_of(topics, ("orders",))) == {("orders", p) for p in range(6)}


def test_describe_in_progress_keeps_comma_values_and_all_replicas() -> None:
    topics = kr.parse_describe(fixture("describe_in_progress.txt"))
    orders = topics["orders"]
    assert orders["configs"]["leader.replication.throttled.replicas"] == "1:2,1:3,4:2,4:3"
    assert orders["configs"]["min.insync.replicas"] == "1"
    assert orders["configs"]["follower.replication.throttled.replicas"] == "1:4,4:4"
    assert orders["partitions"][1]["replicas"] == [2, 4, 3]
    assert orders["partitions"][1]["isr"] == [2, 3]


def test_verify() -> None:
    assert kr.parse_verify(fixture("verify_in_progress.txt")) == {
        "done": 0, "total": 2, "pending": ["orders-1", "orders-4"], "failed": []}
    done = kr.parse_verify(fixture("verify_done.txt"))
    assert done == {"done": 3, "total": 3, "pending": [], "failed": []}


def test_list() -> None:
    assert kr.parse_list(fixture("list_in_progress.txt")) == ["orders-1", "orders-4"]
    assert kr.parse_list("No partition reassignments found.\n") == []


def test_throttle_configs() -> None:
    throttled = kr.parse_configs(fixture("configs_brokers_throttled.txt"))
    throttled.update(kr.parse_configs(fixture("configs_topics_throttled.txt")))
    left = kr.throttles_left(throttled)
    assert left[("broker", "4")] == ["leader.replication.throttled.rate", "follower.replication.throttled.rate"]
    assert left[("topic", "audit.log")] == ["leader.replication.throttled.replicas",
                                            "follower.replication.throttled.replicas"]
    assert len(left) == 6
    clean = kr.parse_configs(fixture("configs_brokers_clean.txt"))
    clean.update(kr.parse_configs(fixture("configs_topics_clean.txt")))
    assert clean[("topic", "audit.log")] == {"min.insync.replicas": "2"}
    assert kr.throttles_left(clean) == {}


def test_voters() -> None:
    assert kr.parse_voters(fixture("quorum_status.txt")) == [1, 2, 3]
    assert kr.parse_voters("CurrentVoters:          [1,2,3]\n") == [1, 2, 3]


def test_unregister_outcome() -> None:
    assert kr.unregister_outcome(0, "") == (True, None)
    assert kr.unregister_outcome(1, fixture("unregister_unknown.txt")) == (False, None)
    changed, error = kr.unregister_outcome(1, "org.apache.kafka.common.errors.TimeoutException: timed out")
    assert not changed and "TimeoutException" in error


# --- the plan --------------------------------------------------------------------------------------

def loads(assignment: dict) -> Counter:
    return Counter(b for replicas in assignment.values() for b in replicas)


def apply(current: dict, plan: dict) -> dict:
    return {**current, **plan}


def test_rebalance_onto_a_new_broker_moves_only_what_it_must() -> None:
    current = kr.assignment_of(kr.parse_describe(fixture("describe_before.txt")))
    # The captured audit.log-1 already has a replica on 4: start from brokers 1-3 only.
    current[("audit.log", 1)] = [2, 3, 1]
    errors, plan = kr.plan_assignment(current, [1, 2, 3, 4])
    assert errors == []
    after = apply(current, plan)
    counts = loads(after)
    assert sorted(counts) == [1, 2, 3, 4] and max(counts.values()) - min(counts.values()) <= 1
    # 18 replicas over 4 brokers: 4 or 5 each; broker 4 had none, so 4 moves are the least possible.
    assert kr.count_moves(current, plan) == 4
    orders = Counter(b for (t, _), r in after.items() if t == "orders" for b in r)
    assert max(orders.values()) - min(orders.values()) <= 1
    for key, replicas in after.items():
        assert len(set(replicas)) == len(replicas) == len(current[key])
    leaders = Counter(r[0] for r in after.values())
    assert max(leaders.values()) - min(leaders.values()) <= 1
    # Applying the plan and planning again changes nothing.
    assert kr.plan_assignment(after, [1, 2, 3, 4]) == ([], {})


def test_balanced_cluster_gives_an_empty_plan() -> None:
    current = {("t", 0): [1, 2], ("t", 1): [2, 3], ("t", 2): [3, 1]}
    assert kr.plan_assignment(current, [1, 2, 3]) == ([], {})


def test_leaders_are_balanced_by_reordering_only() -> None:
    current = {("t", 0): [1, 2], ("t", 1): [1, 3], ("t", 2): [1, 2], ("t", 3): [1, 3]}
    errors, plan = kr.plan_assignment(current, [1, 2, 3], balance_replicas=False)
    assert errors == []
    assert kr.count_moves(current, plan) == 0
    leaders = Counter(r[0] for r in apply(current, plan).values())
    assert max(leaders.values()) - min(leaders.values()) <= 1
    assert kr.plan_assignment(current, [1, 2, 3], balance_replicas=False, balance_leaders=False) == ([], {})


def test_drain_moves_every_replica_off_and_nothing_else() -> None:
    current = {("a", 0): [4, 1], ("a", 1): [2, 4], ("a", 2): [3, 1], ("b", 0): [1, 2, 4], ("b", 1): [2, 3, 1]}
    errors, plan = kr.plan_assignment(current, [1, 2, 3, 4], drain=[4], balance_replicas=False,
                                      balance_leaders=False)
    assert errors == []
    after = apply(current, plan)
    assert all(4 not in r for r in after.values())
    assert set(plan) == {("a", 0), ("a", 1), ("b", 0)}
    assert kr.count_moves(current, plan) == 3
    assert after[("a", 0)][1] == 1 and after[("a", 1)][0] == 2  # positions of the others kept
    assert after[("b", 0)] == [1, 2, 3]
    # Drained already: nothing to do.
    assert kr.plan_assignment(after, [1, 2, 3, 4], drain=[4], balance_replicas=False,
                              balance_leaders=False) == ([], {})
    # With the leaders balanced too (what the module does), the second run is still empty.
    _, plan = kr.plan_assignment(current, [1, 2, 3, 4], drain=[4], balance_replicas=False)
    assert kr.plan_assignment(apply(current, plan), [1, 2, 3, 4], drain=[4], balance_replicas=False) == ([], {})
    counts = loads(apply(current, plan))
    assert 4 not in counts and max(counts.values()) - min(counts.values()) <= 1


def test_unknown_broker_and_too_few_brokers_are_errors() -> None:
    errors, plan = kr.plan_assignment({("a", 0): [1, 7]}, [1, 2, 3])
    assert plan == {} and "broker(s) 7, which the inventory does not list" in errors[0]
    errors, plan = kr.plan_assignment({("a", 0): [1, 2, 3]}, [1, 2, 3], drain=[3])
    assert plan == {} and "a-0 has 3 replicas but only 2 broker(s) can hold them" in errors[0]


@pytest.mark.parametrize("seed", range(25))
def test_random_clusters_end_balanced_and_stable(seed: int) -> None:
    rng = random.Random(seed)
    old = list(range(1, rng.randint(2, 5) + 1))
    brokers = old + list(range(len(old) + 1, len(old) + 1 + rng.randint(0, 3)))
    current = {}
    for t in range(rng.randint(1, 4)):
        rf = rng.randint(1, len(old))
        for p in range(rng.randint(1, 12)):
            current[("t%d" % t, p)] = rng.sample(old, rf)
    errors, plan = kr.plan_assignment(current, brokers)
    assert errors == []
    after = apply(current, plan)
    counts = Counter({b: 0 for b in brokers})
    counts.update(b for r in after.values() for b in r)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    for key, replicas in after.items():
        assert len(set(replicas)) == len(replicas) == len(current[key])
    assert kr.plan_assignment(after, brokers) == ([], {})
    # Never more moves than the replicas above the final share.
    share = -(-sum(counts.values()) // len(brokers))
    before = Counter({b: 0 for b in brokers})
    before.update(b for r in current.values() for b in r)
    assert kr.count_moves(current, plan) <= sum(max(0, n - share + 1) for n in before.values()) + len(brokers)


def test_reassignment_json_is_what_the_cli_reads() -> None:
    data = json.loads(kr.reassignment_json({("orders", 0): [4, 2], ("audit.log", 0): [1, 2, 4]}))
    assert data == {"version": 1, "partitions": [{"topic": "audit.log", "partition": 0, "replicas": [1, 2, 4]},
                                                 {"topic": "orders", "partition": 0, "replicas": [4, 2]}]}
    assert json.loads(kr.election_json([("orders", 1)])) == {"partitions": [{"topic": "orders", "partition": 1}]}


# --- refusal rules ---------------------------------------------------------------------------------

def topics_of(**rf_min: tuple[int, int | None]) -> dict:
    out = {}
    for name, (rf, min_isr) in rf_min.items():
        out[name] = {"replication_factor": rf, "configs": {} if min_isr is None else {"min.insync.replicas": str(min_isr)},
                     "partitions": {0: {"replicas": list(range(1, rf + 1)), "isr": [], "leader": 1}}}
    return out


def test_a_voter_is_never_drained() -> None:
    errors = kr.drain_refusals([2], [1, 2, 3, 4], [1, 2, 3], topics_of(a=(2, 1)), 1)
    assert errors == ["node 2 is a controller, a voter of the static quorum (1,2,3): the quorum can't change, so "
                      "only a broker-only node can be decommissioned"]


def test_replication_factor_must_fit_the_remaining_brokers() -> None:
    errors = kr.drain_refusals([4], [1, 2, 3, 4], [1, 2, 3], topics_of(big=(4, 2), ok=(3, 2)), 1)
    assert errors == ["topic big has replication factor 4 but only 3 broker(s) would remain (1,2,3)"]


def test_min_insync_must_fit_the_remaining_brokers() -> None:
    errors = kr.drain_refusals([4], [1, 2, 3, 4], [1, 2, 3], topics_of(strict=(2, 4), dflt=(2, None)), 4)
    assert [e.split(":")[0] for e in errors] == ["topic dflt has min.insync.replicas=4 but only 3 broker(s) would remain",
                                                 "topic strict has min.insync.replicas=4 but only 3 broker(s) would remain"]


def test_drainable_broker_is_allowed() -> None:
    topics = kr.parse_describe(fixture("describe_before.txt"))
    assert kr.drain_refusals([4], [1, 2, 3, 4], [1, 2, 3], topics, 1) == []
    assert "not one of the cluster's brokers" in kr.drain_refusals([9], [1, 2, 3, 4], [1, 2, 3], topics, 1)[0]
