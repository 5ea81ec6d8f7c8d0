"""The cluster id of a first deployment: never one that a command line reads as an option.

1 in 64 URL-safe base64 forms of 16 random bytes start with "-"; `kafka-storage format --cluster-id -x...` then
fails ("expected one argument"), and the id is already kept on the controller. The generator skips such ids (as
Kafka's Uuid.randomUuid() does), and the format passes the id as `--cluster-id=<id>`, so an id pinned by the user
that starts with "-" formats too.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from pathlib import Path
from unittest import mock

import yaml

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def generator_code() -> str:
    tasks = yaml.safe_load((TASKS / "new_cluster_id.yml").read_text())
    cmd = next(t for t in tasks if t["name"].startswith("Generate the cluster id"))["ansible.builtin.command"]["cmd"]
    m = re.fullmatch(r'\{\{ ansible_playbook_python \}\} -c\s+"(.*)"', cmd.strip(), re.S)
    assert m, cmd
    return m.group(1)


def test_the_generator_skips_ids_that_start_with_a_dash() -> None:
    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64url of 0xf8... starts with "-"
    plain = uuid.UUID(bytes=b"\x10" + bytes(14) + b"\x01")
    out = io.StringIO()
    with mock.patch.object(uuid, "uuid4", side_effect=[dash, dash, plain]), contextlib.redirect_stdout(out):
        exec(generator_code(), {})  # noqa: S102 - the task's own code
    cluster_id = out.getvalue().strip()
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cluster_id), cluster_id


def test_a_generated_id_is_22_characters_of_base64url() -> None:
    for _ in range(200):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(generator_code(), {})  # noqa: S102
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", out.getvalue().strip())


def test_the_format_passes_the_id_glued_to_its_option() -> None:
    storage = (TASKS / "storage.yml").read_text()
    assert "--cluster-id={{ _kafka_cluster_id }}\n" in storage
    assert not re.search(r"--cluster-id\s*\n", storage)
