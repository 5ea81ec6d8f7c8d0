"""A running PLAINTEXT cluster moves to TLS, SASL/SCRAM and ACLs by re-running site.yml, under load.

The load goes through the real edge (HTTPS, NGINX) to the real producer, with idempotent retries; afterwards
the topic is read back with the admin client and every acknowledged message must be there exactly once.
Writes its counts to ``$KRAFTWERK_RESULTS_DIR/migration-under-load.json`` (default: the temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kraftwerk_molecule_common import ADMIN_CONFIG, address, host, hosts_of, playbook
from loadgen import Load, assert_nothing_lost, read_back, tally

KAFKA = hosts_of("kafka")
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


def test_plaintext_cluster_migrates_to_sasl_ssl_under_load(tls: ssl.SSLContext, api_key: str) -> None:
    before = props(KAFKA[0])
    assert before["listeners"].startswith("PLAINTEXT://") and "authorizer.class.name" not in before, before
    run_id = uuid.uuid4().hex[:10]
    load = Load(EDGE_IP, api_key, tls, run_id)
    load.start()
    try:
        wait_for(lambda: load.acked_count() >= 200, 120, "200 acknowledged messages on the PLAINTEXT cluster")
        load.phase = "migration"
        acked_before = load.acked_count()
        started = time.monotonic()
        res = playbook("site.yml")
        duration = round(time.monotonic() - started, 1)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        acked_during = load.acked_count() - acked_before
        load.phase = "after"
        after_migration = load.acked_count()
        wait_for(lambda: load.acked_count() >= after_migration + 100, 120, "acknowledgements after the migration")
    finally:
        load.stop()

    restarts = re.findall(r"(?:TASK|RUNNING HANDLER) \[kafka : Restart Kafka on (\S+)\]", res.stdout)
    after = props(KAFKA[0])
    assert "PLAINTEXT" not in after["listeners"] and "PLAINTEXT" not in after["listener.security.protocol.map"], after
    assert after["inter.broker.listener.name"] == "INTERNAL" and after["controller.listener.names"] == "CONTROLLER_SSL"
    assert "User:ANONYMOUS" not in after["super.users"]
    producer_env = host(hosts_of("producer")[0]).file("/etc/kraftwerk-producer/kraftwerk-producer.env").content_string
    assert 'KRAFTWERK_SECURITY_PROTOCOL="SASL_SSL"' in producer_env

    kafka1 = host(KAFKA[0])
    bootstrap = ",".join(f"{address(h)}:9095" for h in KAFKA)
    result = load.result
    counts = tally(result, read_back(kafka1, bootstrap, ADMIN_CONFIG, TOPIC, run_id, timeout_ms=30000))
    summary = {
        "command": "molecule test -s migration (test_migration.py)",
        "migration_s": duration,
        "kafka_restarts": len(restarts),
        "acknowledged_during_migration": acked_during,
        **counts,
    }
    path = Path(os.environ.get("KRAFTWERK_RESULTS_DIR", tempfile.gettempdir())) / "migration-under-load.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))  # noqa: T201 - the numbers the closing note quotes

    # Three rolls of three nodes: add the listeners, move the traffic, drop the old ones.
    assert len(restarts) == 9, restarts
    assert acked_during > 0, "the producer acknowledged nothing while the migration ran"
    assert_nothing_lost(result, counts)
