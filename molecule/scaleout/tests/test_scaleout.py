"""Scale out, rebalance and decommission a running cluster by re-running playbooks, under load.

The load goes through the real edge (HTTPS, NGINX) to the real producer, with idempotent retries. Steps:
  1. kafka4 joins as a broker-only node: a second inventory puts it in group kafka with
     kafka_process_roles: [broker]; playbooks/firewall.yml (the old nodes let it in), then site.yml.
     The quorum's voters stay nodes 1-3.
  2. playbooks/rebalance.yml: kafka4 gets its share of the replicas; no throttle config is left; a re-run
     changes nothing.
  3. playbooks/decommission.yml refuses a controller (kafka1) before any change; then decommissions kafka4:
     it holds nothing, its unit is stopped and disabled, a re-run changes nothing.
Afterwards the topic is read back with the admin client: every acknowledged message must be there exactly once,
and the edge must have answered no 5xx. Writes the durations and counts to
``$KRAFTWERK_RESULTS_DIR/scaleout-under-load.json`` (default: the temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from kraftwerk_molecule_common import ADMIN_CONFIG, INVENTORY_DIR, address, host, hosts_of, playbook
from loadgen import Load

KAFKA = hosts_of("kafka")
NEW = "kafka4"
EDGE_IP = address(hosts_of("nginx")[0])
TOPIC = "test-topic"


def props(name: str) -> dict[str, str]:
    text = host(name).file("/etc/kafka/server.properties").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(1)


def scaled_inventory() -> str:
    """Molecule's inventory plus kafka4 in group kafka, broker-only (passed as a second -i)."""
    path = Path(INVENTORY_DIR) / "scaleout-hosts.yml"
    path.write_text(json.dumps({"kafka": {"hosts": {NEW: {"kafka_process_roles": ["broker"]}}}}))
    return str(path)


RESULTS = Path(os.environ.get("KRAFTWERK_RESULTS_DIR", tempfile.gettempdir()))


def run(path: str, *extra: str) -> tuple[Any, float]:
    """Run a playbook against the scaled inventory; its output is kept in RESULTS for a post-mortem."""
    started = time.monotonic()
    # Adding a node rolls the three running ones (under load, behind gates): far more than one converge.
    res = playbook(path, "-i", scaled_inventory(), *extra, timeout=2400)
    log = RESULTS / f"scaleout-{Path(path).stem}-{int(time.time())}.log"
    log.write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
    return res, round(time.monotonic() - started, 1)


def recap_changes(stdout: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", stdout, re.M)}


def replicas_by_broker(kafka1: Any, bootstrap: str) -> Counter[int]:
    out = kafka1.check_output(f"kafka-topics --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --describe")
    counts: Counter[int] = Counter()
    for line in out.splitlines():
        m = re.search(r"\tReplicas: ([0-9,]+)", line)
        if m:
            counts.update(int(x) for x in m.group(1).split(","))
    return counts


def throttles(kafka1: Any, bootstrap: str) -> list[str]:
    cmd = f"kafka-configs --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --describe --entity-type"
    text = kafka1.check_output(f"{cmd} brokers") + kafka1.check_output(f"{cmd} topics")
    return [line.strip() for line in text.splitlines() if "throttled" in line]


def test_scale_out_rebalance_decommission_under_load(tls: ssl.SSLContext, api_key: str) -> None:
    assert NEW not in KAFKA and len(KAFKA) == 3, KAFKA
    kafka1 = host(KAFKA[0])
    bootstrap = ",".join(f"{address(h)}:9095" for h in KAFKA)
    voters_before = props(KAFKA[0])["controller.quorum.voters"]
    run_id = uuid.uuid4().hex[:10]
    durations: dict[str, float] = {}
    load = Load(EDGE_IP, api_key, tls, run_id)
    load.start()
    try:
        wait_for(lambda: load.acked_count() >= 200, 120, "200 acknowledged messages before the scale-out")

        load.phase = "scale-out"
        fw, durations["firewall_s"] = run("playbooks/firewall.yml")
        assert fw.returncode == 0, fw.stdout[-6000:] + fw.stderr[-2000:]
        res, durations["scale_out_s"] = run("site.yml")
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        new_props = props(NEW)
        assert new_props["process.roles"] == "broker", new_props
        assert new_props["controller.quorum.voters"] == voters_before
        assert props(KAFKA[0])["controller.quorum.voters"] == voters_before
        # super.users names every node's TLS principal: the running nodes learn the new one through a rolling
        # restart (one at a time, behind the gates) before kafka4 starts; kafka4 itself starts once.
        restarts = re.findall(r"(?:TASK|RUNNING HANDLER) \[kafka : Restart Kafka on (\S+)\]", res.stdout)
        assert sorted(restarts) == sorted(KAFKA), f"expected one rolling restart of {KAFKA}, got {restarts}"

        load.phase = "rebalance"
        res, durations["rebalance_s"] = run("playbooks/rebalance.yml", "-e", "kafka_reassign_poll_interval=5")
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        counts = replicas_by_broker(kafka1, bootstrap)
        assert counts[4] > 0 and max(counts.values()) - min(counts.values()) <= 1, counts
        assert throttles(kafka1, bootstrap) == []
        again, durations["rebalance_rerun_s"] = run("playbooks/rebalance.yml")
        assert again.returncode == 0 and set(recap_changes(again.stdout).values()) == {0}, again.stdout[-4000:]

        load.phase = "decommission"
        refused, _ = run("playbooks/decommission.yml", "-e", f"kafka_decommission_node={KAFKA[0]}")
        assert refused.returncode != 0 and "is a controller" in " ".join(refused.stdout.split()), refused.stdout[-4000:]
        assert set(recap_changes(refused.stdout).values()) == {0}
        res, durations["decommission_s"] = run("playbooks/decommission.yml", "-e", f"kafka_decommission_node={NEW}")
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        assert "Now remove kafka4 from the inventory" in " ".join(res.stdout.split())
        counts = replicas_by_broker(kafka1, bootstrap)
        assert 4 not in counts, counts
        assert throttles(kafka1, bootstrap) == []
        unit = host(NEW).service("kafka")
        assert not unit.is_running and not unit.is_enabled
        again, durations["decommission_rerun_s"] = run("playbooks/decommission.yml", "-e",
                                                       f"kafka_decommission_node={NEW}")
        assert again.returncode == 0 and set(recap_changes(again.stdout).values()) == {0}, again.stdout[-4000:]

        load.phase = "after"
        after = load.acked_count()
        wait_for(lambda: load.acked_count() >= after + 100, 120, "acknowledgements after the decommission")
    finally:
        load.stop()

    group = f"scaleout-check-{run_id}"
    out = kafka1.check_output(
        f"kafka-console-consumer --bootstrap-server {bootstrap} --consumer.config {ADMIN_CONFIG} --topic {TOPIC} "
        f"--from-beginning --timeout-ms 30000 --group {group} 2>/dev/null")
    kafka1.run(f"kafka-consumer-groups --bootstrap-server {bootstrap} --command-config {ADMIN_CONFIG} --delete --group {group}")
    found: Counter[str] = Counter()
    for line in out.splitlines():
        if run_id in line:
            try:
                found[json.loads(line)["id"]] += 1
            except (ValueError, KeyError):
                continue
    result = load.result
    acked = set(result.acked)
    lost = sorted(acked - set(found))
    duplicates = sorted(k for k, n in found.items() if n > 1)
    summary = {
        "command": "molecule test -s scaleout (test_scaleout.py)",
        **durations,
        "acknowledged": len(acked),
        "found": len(found),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "given_up": len(result.given_up),
        "statuses": {phase: dict(c) for phase, c in result.statuses.items()},
        "server_errors": {phase: result.server_errors(phase) for phase in result.statuses},
    }
    path = RESULTS / "scaleout-under-load.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))  # noqa: T201 - the numbers the closing note quotes

    assert not result.unexpected, result.unexpected[:5]
    assert not lost, f"{len(lost)} acknowledged messages are not in the topic: {lost[:5]}"
    assert not duplicates, f"{len(duplicates)} messages are in the topic twice: {duplicates[:5]}"
    assert not result.given_up, result.given_up[:5]
    assert all(n == 0 for n in summary["server_errors"].values()), summary["server_errors"]
