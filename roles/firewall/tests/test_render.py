"""The firewall role's ruleset, unit and validation, through Ansible itself; nothing is applied to this machine.

- Rendering: a tiny playbook (connection local) runs the role's validate tasks and then its two templates into
  a temporary directory, the ruleset with the role's own `validate: nft -c -f %s`. Each ruleset is checked
  again here with `nft -c -f` (check only: the kernel parses it, nothing is loaded) and by its text.
- Validation: bad variables fail in the role's validate entry point with a message naming the variable and
  the entry.
- Lock-out: the role refuses a ruleset that would shut out the play's own SSH connection (SSH_CLIENT); that
  run is in check mode and stops at that check.
- The filters (filter_plugins/firewall_rules.py) directly, for the cases that need no playbook.

The rendering tests need a working `nft` (root, nftables installed: ./kw setup installs it) and are skipped
without one, except under CI=true, where they fail. Run: .venv/bin/pytest -q roles/firewall/tests
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROLE = Path(__file__).resolve().parent.parent
ROOT = ROLE.parent.parent
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"
NFT = shutil.which("nft") or "/usr/sbin/nft"

_spec = importlib.util.spec_from_file_location("firewall_rules", ROLE / "filter_plugins" / "firewall_rules.py")
assert _spec is not None
assert _spec.loader is not None
fw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fw)


def _nft_usable() -> str:
    """Empty when `nft -c` works here, else why not."""
    if not Path(NFT).exists():
        return "nft is not installed (apt-get install nftables)"
    probe = subprocess.run([NFT, "-c", "add table inet kraftwerk_probe"], capture_output=True, text=True, check=False)
    return "" if probe.returncode == 0 else f"nft -c does not work here: {probe.stderr.strip()}"


NFT_PROBLEM = _nft_usable()
# Skipped on a developer machine without nft; CI (CI=true, root, ./kw setup installs nftables) runs them.
needs_nft = pytest.mark.skipif(bool(NFT_PROBLEM) and not os.environ.get("CI"), reason=NFT_PROBLEM or "nft works")

RENDER_PLAYBOOK = """\
- name: Render the firewall role's templates into a directory
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Validate the variables
      ansible.builtin.import_role:
        name: firewall
        tasks_from: validate
    - name: Render the ruleset (nft -c, as the role does)
      ansible.builtin.template:
        src: "{{ fw_role }}/templates/firewall.nft.j2"
        dest: "{{ fw_out }}/firewall.nft"
        mode: "0600"
        validate: %NFT% -c -f %s
    - name: Render the unit
      ansible.builtin.template:
        src: "{{ fw_role }}/templates/kraftwerk-firewall.service.j2"
        dest: "{{ fw_out }}/kraftwerk-firewall.service"
        mode: "0600"
""".replace("%NFT%", NFT)

VALIDATE_PLAYBOOK = """\
- name: Validate the firewall variables only
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Validate the firewall role's variables
      ansible.builtin.include_role:
        name: firewall
        tasks_from: validate
"""

MAIN_PLAYBOOK = """\
- name: Apply the firewall role (check mode only)
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: firewall
"""


def run_playbook(tmp_path: Path, playbook: str, extra: dict[str, Any], *args: str,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(playbook)
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                                 "ansible_python_interpreter": sys.executable}}}}
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    run_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
                   **(env or {}))
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
         "-e", "@" + str(tmp_path / "vars.json"), *args],
        cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=180, check=False)


def render(tmp_path: Path, **variables: Any) -> tuple[str, str]:
    """The ruleset and the unit for these variables, after the role's validation and `nft -c` accepted them."""
    out = tmp_path / "out"
    out.mkdir()
    result = run_playbook(tmp_path, RENDER_PLAYBOOK, {"fw_role": str(ROLE), "fw_out": str(out), **variables})
    assert result.returncode == 0, result.stdout + result.stderr
    ruleset = out / "firewall.nft"
    check = subprocess.run([NFT, "-c", "-f", str(ruleset)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    return ruleset.read_text(), (out / "kraftwerk-firewall.service").read_text()


def rules(ruleset: str) -> list[str]:
    """The statements of the input chain, one per line, without comments and blank lines."""
    body = ruleset.split("chain input {", 1)[1].rsplit("}", 2)[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


# --- Rendering ---------------------------------------------------------------------------------------


@needs_nft
def test_defaults_let_only_ssh_in_from_anywhere(tmp_path: Path) -> None:
    ruleset, _ = render(tmp_path)
    # The table is replaced in one file (one nft transaction), never the whole ruleset.
    assert "table inet kraftwerk\ndelete table inet kraftwerk\n\ntable inet kraftwerk {\n" in ruleset
    assert "flush" not in ruleset
    assert rules(ruleset) == [
        "type filter hook input priority 0; policy drop;",
        "ct state established,related accept",
        "ct state invalid drop",
        "iif lo accept",
        "meta l4proto icmp accept",
        "meta l4proto ipv6-icmp accept",
        'tcp dport 22 accept comment "SSH"',
    ]
    assert "chain output" not in ruleset
    assert "chain forward" not in ruleset
    assert "log" not in " ".join(rules(ruleset))


@needs_nft
def test_mixed_sources_and_ranges_give_one_rule_per_family(tmp_path: Path) -> None:
    ruleset, _ = render(tmp_path, firewall_ssh_port=2222, firewall_ssh_sources=["192.0.2.0/24", "2001:db8:100::/48"],
                        firewall_rules=[
                            {"name": "Kafka clients", "ports": [9092, "9093-9094"],
                             "sources": ["10.0.0.0/8", "2001:db8::/32", "172.16.5.4", "2001:db8:ffff::1"]},
                            {"name": "web v6", "ports": [443, 80], "sources": ["2001:db8::7"]},
                        ])
    assert rules(ruleset)[6:] == [
        'ip saddr 192.0.2.0/24 tcp dport 2222 accept comment "SSH"',
        'ip6 saddr 2001:db8:100::/48 tcp dport 2222 accept comment "SSH"',
        'ip saddr { 10.0.0.0/8, 172.16.5.4 } tcp dport 9092-9094 accept comment "Kafka clients"',
        # 2001:db8:ffff::1 is inside 2001:db8::/32: collapsed.
        'ip6 saddr 2001:db8::/32 tcp dport 9092-9094 accept comment "Kafka clients"',
        'ip6 saddr 2001:db8::7 tcp dport { 80, 443 } accept comment "web v6"',
    ]
    assert "dport 22 " not in ruleset


@needs_nft
def test_any_udp_and_merged_ports(tmp_path: Path) -> None:
    ruleset, _ = render(tmp_path, firewall_rules=[
        {"name": "Node exporter", "ports": ["9100-9101"], "sources": ["any"]},
        {"name": "DNS", "ports": [53], "protocol": "udp", "sources": "any"},
        {"name": "dupes", "ports": [8080, "8081-8090", 8085, 8091, "7000-7000"], "sources": ["any"]},
    ])
    assert rules(ruleset)[7:] == [
        'tcp dport 9100-9101 accept comment "Node exporter"',
        'udp dport 53 accept comment "DNS"',
        'tcp dport { 7000, 8080-8091 } accept comment "dupes"',
    ]
    assert "saddr" not in ruleset


@needs_nft
def test_empty_sources_let_nobody_in(tmp_path: Path) -> None:
    ruleset, _ = render(tmp_path, firewall_ssh_sources=[], firewall_rules=[
        {"name": "Syslog", "ports": [514], "protocol": "udp", "sources": []},
        {"name": "Open", "ports": [80], "sources": ["any"]},
    ])
    statements = rules(ruleset)
    assert not any("dport 22" in s or "dport 514" in s for s in statements)
    assert statements[-1] == 'tcp dport 80 accept comment "Open"'
    assert "# SSH: no sources, nobody is let in" in ruleset
    assert "# Syslog: no sources, nobody is let in" in ruleset


@needs_nft
def test_log_dropped_adds_a_rate_limited_log_rule_last(tmp_path: Path) -> None:
    ruleset, _ = render(tmp_path, firewall_log_dropped=True,
                        firewall_rules=[{"name": "Kafka", "ports": [9092], "sources": ["10.0.0.0/8"]}])
    assert rules(ruleset)[-1] == ('limit rate 10/minute burst 20 packets log prefix "kraftwerk-firewall drop: "'
                                  " level info")


@needs_nft
def test_unit_loads_and_removes_only_the_table(tmp_path: Path) -> None:
    _, unit = render(tmp_path)
    for line in ["Type=oneshot", "RemainAfterExit=yes", "ExecStart=/usr/sbin/nft -f /etc/kraftwerk/firewall.nft",
                 "ExecReload=/usr/sbin/nft -f /etc/kraftwerk/firewall.nft",
                 'ExecStop=/usr/sbin/nft "table inet kraftwerk; delete table inet kraftwerk"',
                 "Wants=network-pre.target", "WantedBy=multi-user.target"]:
        assert line in unit.splitlines()
    assert re.search(r"^Before=.*\bnetwork-pre\.target\b", unit, re.M)
    # The stop command is valid nft (checked, not run).
    stop = subprocess.run([NFT, "-c", "table inet kraftwerk; delete table inet kraftwerk"],
                          capture_output=True, text=True, check=False)
    assert stop.returncode == 0, stop.stderr
    analyze = shutil.which("systemd-analyze")
    if analyze:
        unit_path = tmp_path / "kraftwerk-firewall.service"
        unit_path.write_text(unit)
        verify = subprocess.run([analyze, "verify", str(unit_path)], capture_output=True, text=True, check=False)
        assert verify.returncode == 0, verify.stderr


# --- Validation --------------------------------------------------------------------------------------

BAD = [
    ("name with a quote", {"firewall_rules": [{"name": 'x" accept; flush ruleset', "ports": [1], "sources": ["any"]}]},
     ['firewall_rules[0]', "name must be a short description"]),
    ("port above 65535", {"firewall_rules": [{"name": "big", "ports": [70000], "sources": ["any"]}]},
     ['firewall_rules[0] ("big"): port 70000 is outside 1-65535']),
    ("port zero", {"firewall_rules": [{"name": "zero", "ports": [0], "sources": ["any"]}]},
     ['firewall_rules[0] ("zero"): port 0 is outside 1-65535']),
    ("reversed range", {"firewall_rules": [{"name": "r", "ports": ["9094-9092"], "sources": ["any"]}]},
     ['port "9094-9092" is a range whose start 9094 is above its end 9092']),
    ("not a port", {"firewall_rules": [{"name": "r", "ports": ["http"], "sources": ["any"]}]},
     ['firewall_rules[0] ("r"): port "http" is not a port']),
    ("no ports", {"firewall_rules": [{"name": "r", "ports": [], "sources": ["any"]}]},
     ['firewall_rules[0] ("r"): ports must be a non-empty list']),
    ("bad IPv4", {"firewall_rules": [{"name": "r", "ports": [1], "sources": ["10.0.0.300"]}]},
     ['firewall_rules[0] ("r"): sources: "10.0.0.300" is not an IPv4 or IPv6 address or CIDR']),
    ("bad IPv6", {"firewall_rules": [{"name": "r", "ports": [1], "sources": ["2001:db8::g/64"]}]},
     ['sources: "2001:db8::g/64" is not an IPv4 or IPv6 address or CIDR']),
    ("host bits", {"firewall_rules": [{"name": "r", "ports": [1], "sources": ["10.1.2.3/8"]}]},
     ['sources: "10.1.2.3/8" has host bits set: write the network 10.0.0.0/8']),
    ("any mixed", {"firewall_rules": [{"name": "r", "ports": [1], "sources": ["any", "10.0.0.0/8"]}]},
     ['firewall_rules[0] ("r"): sources mixes "any" with other entries']),
    ("sources a string", {"firewall_rules": [{"name": "r", "ports": [1], "sources": "10.0.0.1"}]},
     ['firewall_rules[0] ("r"): sources must be a list']),
    ("ssh sources", {"firewall_ssh_sources": ["any", "192.0.2.1", "nope"]},
     ['firewall_ssh_sources: "nope" is not an IPv4 or IPv6 address', 'firewall_ssh_sources mixes "any"']),
    ("ssh port", {"firewall_ssh_port": 65536}, ["firewall_ssh_port must be a TCP port number in 1-65535; got 65536"]),
    ("enabled not a bool", {"firewall_enabled": "no"},
     ["firewall_enabled and firewall_log_dropped must be true or false"]),
    # Caught by the argument spec before validate.yml; the message still names the variable and the key.
    ("unknown protocol", {"firewall_rules": [{"name": "r", "ports": [1], "protocol": "icmp", "sources": ["any"]}]},
     ["value of protocol must be one of: tcp, udp, got: icmp found in firewall_rules"]),
    ("misspelt key", {"firewall_rules": [{"name": "r", "ports": [1], "source": ["any"]}]},
     ["firewall_rules.source. Supported parameters include"]),
]


@pytest.mark.parametrize(("variables", "expected"), [(v, e) for _, v, e in BAD], ids=[c[0] for c in BAD])
def test_bad_variables_are_refused_with_a_message(tmp_path: Path, variables: dict[str, Any],
                                                  expected: list[str]) -> None:
    result = run_playbook(tmp_path, VALIDATE_PLAYBOOK, variables)
    output = " ".join((result.stdout + result.stderr).split())  # the callback folds long messages
    assert result.returncode != 0, output
    for text in expected:
        assert text in output, output


def test_good_variables_pass_validation(tmp_path: Path) -> None:
    result = run_playbook(tmp_path, VALIDATE_PLAYBOOK, {
        "firewall_ssh_sources": ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"],
        "firewall_log_dropped": True,
        "firewall_rules": [{"name": "Kafka clients 1.0_x-y", "ports": [9092, "9093-9094", "8080"],
                            "protocol": "udp", "sources": []},
                           {"name": "any", "ports": [1, 65535], "sources": "any"}]})
    assert result.returncode == 0, result.stdout + result.stderr


def test_play_refuses_to_lock_out_its_own_ssh_connection(tmp_path: Path) -> None:
    # Check mode, and the role stops at the lock-out check: nothing is installed or applied.
    result = run_playbook(tmp_path, MAIN_PLAYBOOK, {"firewall_ssh_sources": ["10.0.0.0/8"]}, "--check",
                          env={"SSH_CLIENT": "203.0.113.9 50022 22"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert "Refuse a ruleset that would shut out" in output
    assert "from 203.0.113.9 to TCP port 22" in output
    assert "firewall_ssh_sources" in output
    assert "Install nftables" not in output


# --- The filters -------------------------------------------------------------------------------------


def test_plan_merges_ports_and_collapses_addresses() -> None:
    plan = fw.firewall_plan([{"name": "a", "ports": ["10-20", 15, 21, 30], "sources": ["10.0.0.0/25", "10.0.0.128/25",
                                                                                      "::1", "2001:db8::/128"]}],
                            22, ["any"])
    assert plan == [
        {"name": "SSH", "protocol": "tcp", "ports": ["22"], "any": True, "ipv4": [], "ipv6": []},
        {"name": "a", "protocol": "tcp", "ports": ["10-21", "30"], "any": False, "ipv4": ["10.0.0.0/24"],
         "ipv6": ["::1", "2001:db8::"]},
    ]


@pytest.mark.parametrize(("ssh_client", "admitted"), [
    ("192.0.2.10 50000 22", True),         # in firewall_ssh_sources
    ("198.51.100.1 50000 22", False),      # not in it
    ("198.51.100.1 50000 2222", True),     # another port opened to any by a rule
    ("2001:db8::5 50000 22", True),
    ("2001:db9::5 50000 22", False),
    ("::ffff:192.0.2.10 50000 22", True),  # IPv4 connection on a dual-stack socket
    ("127.0.0.1 50000 22", True),          # loopback is always accepted
    ("", True),                            # not an SSH connection: nothing to check
    ("garbage", True),
])
def test_admits(ssh_client: str, admitted: bool) -> None:
    plan = fw.firewall_plan([{"name": "alt ssh", "ports": [2222], "sources": ["any"]},
                             {"name": "udp 22", "ports": [22], "protocol": "udp", "sources": ["any"]}],
                            22, ["192.0.2.0/24", "2001:db8::/32"])
    assert fw.firewall_admits(plan, ssh_client) is admitted


def test_problems_of_odd_types() -> None:
    assert fw.firewall_rules_problems({"name": "x"}) == [
        'firewall_rules must be a list of rules ({name, ports, protocol, sources}); got {"name": "x"}']
    assert fw.firewall_rules_problems(["x"]) == [
        'firewall_rules[0] must be a mapping with name, ports, protocol and sources; got "x"']
    assert fw.firewall_port_problems(True) == ["firewall_ssh_port must be a TCP port number in 1-65535; got true"]
    assert fw.firewall_port_problems("22") == []
    assert fw.firewall_sources_problems(None) == [
        'firewall_ssh_sources must be a list of IPv4/IPv6 addresses or CIDRs, or ["any"]; got null']
    assert fw.firewall_sources_problems([" 10.0.0.1"])[0].startswith('firewall_ssh_sources: " 10.0.0.1" has spaces')
    assert "IPv6 zone" in fw.firewall_sources_problems(["fe80::1%eth0"])[0]
    assert "write it as 10.0.0.0/24" in fw.firewall_sources_problems(["::ffff:10.0.0.0/120"])[0]
    assert fw.firewall_sources_problems([]) == []
    assert fw.firewall_sources_problems("any") == []
