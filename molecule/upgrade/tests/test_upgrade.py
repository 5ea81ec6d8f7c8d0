"""A running Kafka 3.8.1 cluster moves to 3.9.1 by re-running site.yml, under load; then metadata.version is
finalized by playbooks/finalize-upgrade.yml, a separate step.

The load goes through the real edge (HTTPS, NGINX) to the real producer, with idempotent retries; afterwards the
topic is read back with the admin client and every acknowledged message must be there exactly once, with zero
5xx in every phase. Which version a node runs is read from its JVM (the Kafka jar it holds open), not from the
`current` link. Writes its counts to ``$KRAFTWERK_RESULTS_DIR/upgrade-under-load.json`` (default: the temporary
directory). The tests run in file order and build on each other.
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

from kraftwerk_molecule_common import ADMIN_CONFIG, address, host, hosts_of, playbook
from loadgen import Load

KAFKA = hosts_of("kafka")
EDGE_IP = address(hosts_of("nginx")[0])
TOPIC = "test-topic"
BOOTSTRAP = ",".join(f"{address(h)}:9095" for h in KAFKA)
RESTART_RE = r"(?:TASK|RUNNING HANDLER) \[kafka : Restart Kafka on (\S+)\]"


def running_version(name: str) -> str:
    """The Kafka version node `name`'s JVM runs: the core jar among the files of the unit's main process."""
    out = host(name).check_output(
        "pid=$(systemctl show -p MainPID --value kafka); "
        "for f in /proc/$pid/fd/*; do readlink \"$f\"; done 2>/dev/null | grep -E '/kafka_2\\.13-[^/]*\\.jar$' || true")
    m = re.search(r"/kafka_2\.13-([0-9.]+)\.jar", out)
    return m.group(1) if m else ""


def versions() -> dict[str, str]:
    return {name: running_version(name) for name in KAFKA}


def finalized() -> str:
    out = host(KAFKA[0]).check_output(
        f"kafka-features --bootstrap-server {BOOTSTRAP} --command-config {ADMIN_CONFIG} describe 2>/dev/null")
    m = re.search(r"Feature: metadata\.version\t.*FinalizedVersionLevel: (\S+)", out)
    assert m, out
    return m.group(1)


def recap_changed(out: str) -> dict[str, int]:
    return {h: int(n) for h, n in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", out, re.MULTILINE)}


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(1)


def test_the_cluster_starts_on_381() -> None:
    assert versions() == {name: "3.8.1" for name in KAFKA}
    assert finalized() == "3.8-IV0"
    for name in KAFKA:
        assert host(name).file("/opt/kafka/current").linked_to == "/opt/kafka/3.8.1"


def test_finalize_refuses_while_nodes_run_381() -> None:
    res = playbook("playbooks/finalize-upgrade.yml", "-e", "kafka_version=3.9.1")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode != 0
    for name in KAFKA:
        assert f"{name} (runs 3.8.1)" in out, out[-3000:]
    assert finalized() == "3.8-IV0"


def test_check_mode_names_the_nodes_and_changes_nothing() -> None:
    pids = {name: host(name).check_output("systemctl show -p MainPID --value kafka") for name in KAFKA}
    res = playbook("site.yml", "--check", "--diff", "-e", "kafka_version=3.9.1")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0, out[-4000:]
    assert re.search(r"Kafka 3\.8\.1 on (kafka\d, ){2}kafka\d -> 3\.9\.1", out), out[-4000:]
    assert re.search(r"Would restart Kafka on (kafka\d, ){2}kafka\d \(one node at a time", out), out[-4000:]
    assert not re.search(RESTART_RE, out)
    assert {name: host(name).check_output("systemctl show -p MainPID --value kafka") for name in KAFKA} == pids
    assert versions() == {name: "3.8.1" for name in KAFKA}
    for name in KAFKA:
        assert host(name).file("/opt/kafka/current").linked_to == "/opt/kafka/3.8.1"
        assert not host(name).file("/opt/kafka/3.9.1/libs").exists


def test_rolling_upgrade_and_finalize_under_load(tls: ssl.SSLContext, api_key: str) -> None:
    run_id = uuid.uuid4().hex[:10]
    load = Load(EDGE_IP, api_key, tls, run_id)
    load.start()
    try:
        wait_for(lambda: load.acked_count() >= 200, 120, "200 acknowledged messages on 3.8.1")
        load.phase = "upgrade"
        acked_before = load.acked_count()
        started = time.monotonic()
        res = playbook("site.yml", "-e", "kafka_version=3.9.1")
        upgrade_s = round(time.monotonic() - started, 1)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        acked_during = load.acked_count() - acked_before
        # Between the two steps: every node on 3.9.1, metadata.version untouched.
        assert versions() == {name: "3.9.1" for name in KAFKA}
        assert finalized() == "3.8-IV0"

        load.phase = "finalize"
        started = time.monotonic()
        fin = playbook("playbooks/finalize-upgrade.yml", "-e", "kafka_version=3.9.1")
        finalize_s = round(time.monotonic() - started, 1)
        assert fin.returncode == 0, fin.stdout[-6000:] + fin.stderr[-2000:]

        load.phase = "after"
        after = load.acked_count()
        wait_for(lambda: load.acked_count() >= after + 100, 120, "acknowledgements after the upgrade")
    finally:
        load.stop()

    restarts = re.findall(RESTART_RE, res.stdout)
    assert sorted(restarts) == sorted(KAFKA), restarts  # one restart per node: the version change's only
    assert "metadata.version 3.8-IV0 -> 3.9-IV0 (raised)" in " ".join(fin.stdout.split()), fin.stdout[-4000:]
    assert finalized() == "3.9-IV0"
    assert versions() == {name: "3.9.1" for name in KAFKA}
    for name in KAFKA:
        assert host(name).file("/opt/kafka/current").linked_to == "/opt/kafka/3.9.1"
        assert host(name).file("/opt/kafka/3.8.1/libs").is_directory  # kept beside it, for a rollback

    kafka1 = host(KAFKA[0])
    group = f"upgrade-check-{run_id}"
    out = kafka1.check_output(
        f"kafka-console-consumer --bootstrap-server {BOOTSTRAP} --consumer.config {ADMIN_CONFIG} --topic {TOPIC} "
        f"--from-beginning --timeout-ms 30000 --group {group} 2>/dev/null")
    kafka1.run(f"kafka-consumer-groups --bootstrap-server {BOOTSTRAP} --command-config {ADMIN_CONFIG} "
               f"--delete --group {group}")
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
    server_errors = {phase: result.server_errors(phase) for phase in result.statuses}
    summary = {
        "command": "molecule test -s upgrade (test_upgrade.py)",
        "upgrade_s": upgrade_s,
        "finalize_s": finalize_s,
        "kafka_restarts": len(restarts),
        "acknowledged": len(acked),
        "acknowledged_during_upgrade": acked_during,
        "found": len(found),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "given_up": len(result.given_up),
        "statuses": {phase: dict(c) for phase, c in result.statuses.items()},
        "server_errors": server_errors,
    }
    path = Path(os.environ.get("KRAFTWERK_RESULTS_DIR", tempfile.gettempdir())) / "upgrade-under-load.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))  # noqa: T201 - the numbers the closing note quotes

    assert acked_during > 0, "the producer acknowledged nothing while the upgrade ran"
    assert not result.unexpected, result.unexpected[:5]
    assert not lost, f"{len(lost)} acknowledged messages are not in the topic: {lost[:5]}"
    assert not duplicates, f"{len(duplicates)} messages are in the topic twice: {duplicates[:5]}"
    assert not result.given_up, result.given_up[:5]
    assert all(n == 0 for n in server_errors.values()), server_errors


def test_rerunning_changes_nothing() -> None:
    fin = playbook("playbooks/finalize-upgrade.yml", "-e", "kafka_version=3.9.1")
    assert fin.returncode == 0, fin.stdout[-4000:]
    assert "metadata.version 3.9-IV0 -> 3.9-IV0 (already finalized" in " ".join(fin.stdout.split())
    assert set(recap_changed(fin.stdout).values()) == {0}, fin.stdout[-3000:]

    res = playbook("site.yml", "-e", "kafka_version=3.9.1")
    assert res.returncode == 0, res.stdout[-4000:]
    assert set(recap_changed(res.stdout).values()) == {0}, res.stdout[-3000:]
    assert not re.findall(RESTART_RE, res.stdout)


def test_no_silent_downgrade_and_never_below_the_finalized_metadata_version() -> None:
    pids = {name: host(name).check_output("systemctl show -p MainPID --value kafka") for name in KAFKA}
    res = playbook("site.yml", "-e", "kafka_version=3.8.1")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode != 0
    assert "kafka_version 3.8.1 is lower than what the cluster has: kafka1 runs 3.9.1" in out, out[-3000:]
    assert "the cluster's finalized metadata.version is 3.9-IV0, and Kafka 3.8.1 supports at most 3.8-IV0" in out

    res = playbook("site.yml", "-e", '{"kafka_version": "3.8.1", "kafka_allow_downgrade": true}')
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode != 0
    assert "is lower than what the cluster has" not in out
    assert "the cluster's finalized metadata.version is 3.9-IV0" in out, out[-3000:]

    assert {name: host(name).check_output("systemctl show -p MainPID --value kafka") for name in KAFKA} == pids
    assert versions() == {name: "3.9.1" for name in KAFKA}
