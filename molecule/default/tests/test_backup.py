"""Topic backup and restore on the real lab: playbooks/topic-backup.yml exports test-topic to the controller,
playbooks/topic-restore.yml imports it into test-topic.restore and verifies it record by record (the CLI compares
partition, key, value, headers and, on a CreateTime target, timestamps; the play fails on any difference).
Here, independently: the restored topic holds as many records as the file, per partition, and a second restore
into the now non-empty topic is refused. The restored topic is deleted at the end.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_CONFIG, INVENTORY_DIR, address, host, hosts_of, playbook

KAFKA = hosts_of("kafka")
BOOTSTRAP = ",".join(f"{address(h)}:9095" for h in KAFKA)
SOURCE, TARGET = "test-topic", "test-topic.restore"


def restored_offsets_per_partition(kafka1: Any) -> Counter[int]:
    """Records per partition of the target, as the console consumer (admin) reads them: one line per record."""
    out = kafka1.check_output(
        f"kafka-console-consumer --bootstrap-server {BOOTSTRAP} --consumer.config {ADMIN_CONFIG} --topic {TARGET} "
        "--from-beginning --timeout-ms 15000 --property print.partition=true --property print.offset=true "
        "--property print.value=false --property print.key=false 2>/dev/null")
    return Counter(int(m) for m in re.findall(r"Partition:(\d+)", out))


@pytest.fixture(scope="module")
def backup_file() -> Path:
    res = playbook("playbooks/topic-backup.yml", "-e", f"kraftwerk_backup_topic={SOURCE}")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    path = Path(re.search(r"to\s+(\S+\.jsonl\.gz)", res.stdout).group(1))  # type: ignore[union-attr]
    assert path.is_file() and path.resolve().is_relative_to(INVENTORY_DIR.resolve()), path
    return path


def test_a_topic_round_trips_through_backup_and_restore(backup_file: Path) -> None:
    kafka1 = host(KAFKA[0])
    with gzip.open(backup_file, "rt", encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        per_partition = Counter(json.loads(line)["partition"] for line in fh if line.strip())
    assert sum(per_partition.values()) > 0, header
    try:
        res = playbook("playbooks/topic-restore.yml", "-e", f"kraftwerk_restore_file={backup_file}",
                       "-e", f"kraftwerk_restore_topic={TARGET}")
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        assert f"Restored and verified {sum(per_partition.values())} records" in " ".join(res.stdout.split())
        assert restored_offsets_per_partition(kafka1) == per_partition

        again = playbook("playbooks/topic-restore.yml", "-e", f"kraftwerk_restore_file={backup_file}",
                         "-e", f"kraftwerk_restore_topic={TARGET}")
        assert again.returncode != 0 and "already holds records" in " ".join(again.stdout.split()), again.stdout[-3000:]
        assert restored_offsets_per_partition(kafka1) == per_partition  # the refused run wrote nothing
    finally:
        kafka1.run(f"kafka-topics --bootstrap-server {BOOTSTRAP} --command-config {ADMIN_CONFIG} --delete "
                   f"--if-exists --topic {TARGET}")
        backup_file.unlink(missing_ok=True)
