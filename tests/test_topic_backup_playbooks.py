"""playbooks/topic-backup.yml and topic-restore.yml refuse bad requests before any host is touched.

As in test_validation.py, the hosts point at a closed port: a check that let a bad request through would make the
play try to connect and fail with "unreachable", without the expected message. The check-mode backup touches no
host at all and writes nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from test_validation import ANSIBLE_PLAYBOOK, ROOT, SECRETS, THREE, write_inventory

BACKUP_PASSWORD = {"kraftwerk_backup_kafka_password": "backup-password-0123"}


def run(playbook: str, inventory: Path, extra: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_STRATEGY="linear",
               ANSIBLE_STDOUT_CALLBACK="default")
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(ROOT / "playbooks" / playbook), "-e", json.dumps(extra), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


def _backup_file(tmp_path: Path, header: dict[str, object]) -> str:
    path = tmp_path / "backup.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(header) + "\n").encode()))
    return str(path)


HEADER = {"format": "kraftwerk-topic-backup", "version": 1, "topic": "test-topic", "partitions": 6,
          "records": 3, "created_at": "2025-01-01T00:00:00+00:00", "offsets": {}}

CASES = [
    ("backup: no topic", "topic-backup.yml", {**BACKUP_PASSWORD}, "Say which topic to back up"),
    ("backup: undeclared topic", "topic-backup.yml", {**BACKUP_PASSWORD, "kraftwerk_backup_topic": "other"},
     "one of test-topic, test-topic.dlq"),
    ("backup: no principal", "topic-backup.yml", {"kraftwerk_backup_topic": "test-topic"},
     "exists only when kraftwerk_backup_kafka_password is set"),
    ("restore: undeclared target", "topic-restore.yml",
     {**BACKUP_PASSWORD, "kraftwerk_restore_topic": "test-topic", "kraftwerk_restore_file": "HEADER"},
     "one of test-topic.restore, test-topic.dlq.restore"),
    ("restore: missing file", "topic-restore.yml",
     {**BACKUP_PASSWORD, "kraftwerk_restore_topic": "test-topic.restore", "kraftwerk_restore_file": "/nonexistent"},
     'kraftwerk_restore_file must name a backup file on the controller (got "/nonexistent")'),
    ("restore: flag not a boolean", "topic-restore.yml",
     {**BACKUP_PASSWORD, "kraftwerk_restore_topic": "test-topic.restore", "kraftwerk_restore_file": "HEADER",
      "kraftwerk_restore_allow_non_empty": "yes"}, "must be true or false"),
    ("restore: not a backup", "topic-restore.yml",
     {**BACKUP_PASSWORD, "kraftwerk_restore_topic": "test-topic.restore", "kraftwerk_restore_file": "OTHER"},
     "is not a backup of playbooks/topic-backup.yml"),
]


@pytest.mark.parametrize(("case", "playbook", "extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused(tmp_path: Path, case: str, playbook: str, extra: dict[str, object],
                                expected: str) -> None:
    inventory = write_inventory(tmp_path, THREE, apps=True)
    files = {"HEADER": _backup_file(tmp_path, HEADER), "OTHER": _backup_file(tmp_path, {"format": "other"})}
    extra = {k: files.get(str(v), v) for k, v in extra.items()}
    result = run(playbook, inventory, {**SECRETS, **extra})
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert expected in out, out[-3000:]
    assert "UNREACHABLE" not in out, out[-3000:]


def test_backup_check_mode_touches_nothing(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, THREE, apps=True)
    result = run("topic-backup.yml", inventory, {**SECRETS, **BACKUP_PASSWORD, "kraftwerk_backup_topic": "test-topic"},
                 "--check")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert f"would export topic test-topic on app1 as kraftwerk-backup to {tmp_path}/backups/test-topic-" in out, out
    assert not (tmp_path / "backups").exists()
