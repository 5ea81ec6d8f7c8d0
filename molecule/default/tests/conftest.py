"""Shared fixtures for the Molecule verify step: hosts come from Molecule's inventory."""

from __future__ import annotations

import os
import shlex
import socket
import ssl
import subprocess
import sys
from pathlib import Path
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import testinfra
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
INVENTORY_DIR = Path(INVENTORY).resolve().parent
RUNNER = AnsibleRunner(INVENTORY)
CA_FILE = Path(os.environ.get("KRAFTWERK_CA_FILE", INVENTORY_DIR / "pki" / "ca.crt"))
# The admin client configuration the kafka role writes on each node (SASL_SSL as the admin principal).
ADMIN_CONFIG = "/etc/kafka/admin.properties"
# The lab's vault (lab/kraftwerk-vault; Molecule shares inventory/lab/group_vars).
VAULT_INVENTORY = Path(os.environ.get("KRAFTWERK_VAULT_INVENTORY", ROOT / "inventory" / "lab"))

# Tests marked long run only under `./kw test --all` (KRAFTWERK_LONG_TESTS=1). Without it they are deselected, not
# skipped: pytest's summary counts them as "deselected", never as passed.
LONG_TESTS = os.environ.get("KRAFTWERK_LONG_TESTS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: runs only under ./kw test --all (KRAFTWERK_LONG_TESTS=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG_TESTS:
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


def vault() -> dict[str, Any]:
    """The decrypted secrets of the lab's vault."""
    out = subprocess.run([sys.executable, str(ROOT / "lab" / "kraftwerk-vault"), str(VAULT_INVENTORY), "--show"],
                         check=True, capture_output=True, text=True).stdout
    return dict(yaml.safe_load(out))


@pytest.fixture(scope="session")
def api_key() -> str:
    """The producer API key: KRAFTWERK_API_KEY, or the first one in the lab's vault."""
    key = os.environ.get("KRAFTWERK_API_KEY")
    if key:
        return key
    return str(vault()["vault_kraftwerk_api_keys"][0])


@pytest.fixture(scope="session")
def tls() -> ssl.SSLContext:
    """Verifies the edge's certificate against the generated CA only (not the system store)."""
    assert CA_FILE.is_file(), f"CA certificate {CA_FILE} is missing"
    return ssl.create_default_context(cafile=str(CA_FILE))


def hosts_of(group: str) -> list[str]:
    return sorted(RUNNER.get_hosts(group))


def host(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def address(name: str) -> str:
    return str(RUNNER.get_variables(name)["ansible_host"])


@pytest.fixture(scope="session")
def kafka_hosts() -> list[str]:
    names = hosts_of("kafka")
    assert len(names) == 3, names
    return names


@pytest.fixture(scope="session")
def bootstrap(kafka_hosts: list[str]) -> str:
    return ",".join(f"{address(h)}:9095" for h in kafka_hosts)


@pytest.fixture(scope="session")
def kafka1(kafka_hosts: list[str]) -> Any:
    return host(kafka_hosts[0])


def converge(*extra: str) -> subprocess.CompletedProcess[str]:
    """Run site.yml again against Molecule's hosts, the way an operator re-runs it."""
    return playbook("site.yml", *extra)


def playbook(path: str, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a playbook of the project (path relative to the root) against Molecule's hosts."""
    # Molecule's own ANSIBLE_* settings (roles path, library, config) point into its scenario: drop them
    # and use the project's ansible.cfg, as an operator would.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") or k == "ANSIBLE_VAULT_PASSWORD_FILE"}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default",
               # Throw-away lab hosts with new host keys each time (Molecule's inventory says
               # StrictHostKeyChecking=no; Mitogen goes by this setting).
               ANSIBLE_HOST_KEY_CHECKING="False")
    return subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(ROOT / path), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def eventually(check: Callable[[], T | None], timeout: float, what: str, every: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
        except AssertionError as exc:  # a check may assert to say why it is not there yet
            result, last = None, exc
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}; last: {last}"
        time.sleep(every)


def connects_from(name: str, ip: str, port: int) -> bool:
    """Whether host `name` can open a TCP connection to ip:port (3 s)."""
    code = f"import socket; s = socket.socket(); s.settimeout(3); print(s.connect_ex(({ip!r}, {port})))"
    return host(name).check_output(f"python3 -c {shlex.quote(code)}").strip() == "0"


def connects_here(ip: str, port: int) -> bool:
    """Whether the controller (an outsider to every group) can open a TCP connection to ip:port (3 s)."""
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((ip, port)) == 0
