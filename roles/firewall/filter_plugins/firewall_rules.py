"""Filters that check the firewall variables and turn them into the rules of the nftables template.

The role's variables are data (firewall_rules, firewall_ssh_port, firewall_ssh_sources). These filters:

  firewall_rules_problems    every problem in firewall_rules, as messages naming the variable and the entry
  firewall_port_problems     problems of one port variable (firewall_ssh_port)
  firewall_sources_problems  problems of one sources list (firewall_ssh_sources)
  firewall_plan              the checked variables as the list of accept rules the template writes, SSH first
  firewall_admits            whether a plan lets a given SSH connection (SSH_CLIENT) in

Addresses are parsed with Python's ipaddress module (the ansible.utils collection is not needed). A plan
is computed once (role vars) and used both by the template and by the lock-out check.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

RULE_KEYS = ("name", "ports", "protocol", "sources")
PROTOCOLS = ("tcp", "udp")
NAME_RE = re.compile(r"[A-Za-z0-9 ._-]+\Z")
NAME_MAX = 128  # nft refuses longer comments
PORT_RE = re.compile(r"([0-9]{1,5})\Z")
RANGE_RE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})\Z")
ANY = "any"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _show(value: Any) -> str:
    """A value as the user wrote it, for messages (JSON, so strings are quoted and None is null)."""
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


# --- Ports -------------------------------------------------------------------------------------------


def _parse_port(value: Any) -> tuple[int, int] | str:
    """(low, high) for a port or an "a-b" range, or the reason it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return "is not a port: give a number or an \"a-b\" range"
    text = str(value).strip()
    single = PORT_RE.match(text)
    if single:
        low = high = int(single.group(1))
    else:
        span = RANGE_RE.match(text)
        if not span:
            return "is not a port: give a number (22) or a range written \"a-b\" (9092-9094)"
        low, high = int(span.group(1)), int(span.group(2))
        if low > high:
            return f"is a range whose start {low} is above its end {high}: write \"{high}-{low}\""
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        return "is outside 1-65535"
    return (low, high)


def _merge_ports(spans: list[tuple[int, int]]) -> list[str]:
    """Sorted; duplicates, overlaps and neighbours merged: [(22, 22), (9093, 9094), (9092, 9092)] -> 22, 9092-9094."""
    merged: list[list[int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [str(low) if low == high else f"{low}-{high}" for low, high in merged]


def firewall_port_problems(value: Any, variable: str = "firewall_ssh_port") -> list[str]:
    """Problems of a single port variable (a number in 1-65535, no range)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not PORT_RE.match(str(value).strip()):
        return [f"{variable} must be a TCP port number in 1-65535; got {_show(value)}"]
    if not 1 <= int(str(value).strip()) <= 65535:
        return [f"{variable} must be a TCP port number in 1-65535; got {_show(value)}"]
    return []


# --- Sources -----------------------------------------------------------------------------------------


def _parse_source(value: Any) -> Network | str:
    """The network of an address or CIDR, or the reason it is not one."""
    if not isinstance(value, str):
        return "is not an address: give an IPv4 or IPv6 address or CIDR as a string"
    if value != value.strip() or not value:
        return "has spaces around it or is empty: give an IPv4 or IPv6 address or CIDR"
    if "%" in value:
        return "has an IPv6 zone (%...), which nftables cannot match: leave it out"
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(value, strict=False)
            return f"has host bits set: write the network {fixed} (or the single address without /prefix)"
        return "is not an IPv4 or IPv6 address or CIDR (e.g. 192.0.2.10, 10.0.0.0/8, 2001:db8::/32)"
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return (f"is an IPv4-mapped IPv6 address, which IPv4 packets never carry: write it as {mapped}"
                    + (f"/{network.prefixlen - 96}" if network.prefixlen < 128 else ""))
    return network


def _sources_list(value: Any) -> list[Any] | None:
    """The sources as a list: a list as given, the bare word "any" as ["any"]; None when it is neither."""
    if _is_list(value):
        return list(value)
    if value == ANY:
        return [ANY]
    return None


def firewall_sources_problems(value: Any, variable: str = "firewall_ssh_sources") -> list[str]:
    """Problems of one sources list: each entry an address or CIDR, or the list is just ["any"]."""
    sources = _sources_list(value)
    if sources is None:
        return [f"{variable} must be a list of IPv4/IPv6 addresses or CIDRs, or [\"any\"]; got {_show(value)}"]
    problems = []
    for item in sources:
        if item == ANY:
            continue
        reason = _parse_source(item)
        if isinstance(reason, str):
            problems.append(f"{variable}: {_show(item)} {reason}")
    if ANY in sources and len(sources) > 1:
        problems.append(f"{variable} mixes \"any\" with other entries {_show(sources)}: \"any\" already lets every "
                        "address in; give either [\"any\"] or the addresses")
    return problems


# --- Rules -------------------------------------------------------------------------------------------


def firewall_rules_problems(rules: Any, variable: str = "firewall_rules") -> list[str]:
    """Every problem in firewall_rules, each naming the variable, the entry and what to write instead."""
    if not _is_list(rules):
        return [f"{variable} must be a list of rules ({{name, ports, protocol, sources}}); got {_show(rules)}"]
    problems: list[str] = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            problems.append(f"{variable}[{index}] must be a mapping with name, ports, protocol and sources; "
                            f"got {_show(rule)}")
            continue
        name = rule.get("name")
        where = f"{variable}[{index}]" + (f" ({_show(name)})" if isinstance(name, str) else "")
        for key in sorted(set(rule) - set(RULE_KEYS), key=str):
            problems.append(f"{where}: unknown key {_show(key)}; a rule has name, ports, protocol and sources")
        if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > NAME_MAX:
            problems.append(f"{where}: name must be a short description of 1 to {NAME_MAX} letters, digits, "
                            f"spaces and . _ - (it becomes the nft comment); got {_show(name)}")
        if "ports" not in rule:
            problems.append(f"{where}: ports is missing; give a list of port numbers or \"a-b\" ranges")
        elif not _is_list(rule["ports"]) or not rule["ports"]:
            problems.append(f"{where}: ports must be a non-empty list of port numbers or \"a-b\" ranges; "
                            f"got {_show(rule['ports'])}")
        else:
            for port in rule["ports"]:
                reason = _parse_port(port)
                if isinstance(reason, str):
                    problems.append(f"{where}: port {_show(port)} {reason}")
        protocol = rule.get("protocol", "tcp")
        if protocol not in PROTOCOLS:
            problems.append(f"{where}: protocol must be tcp or udp; got {_show(protocol)}")
        if "sources" not in rule:
            problems.append(f"{where}: sources is missing; give a list of addresses or CIDRs, [\"any\"], or [] "
                            "(nobody)")
        else:
            problems += firewall_sources_problems(rule["sources"], f"{where}: sources")
    return problems


def _plan_rule(name: str, protocol: str, ports: list[Any], sources: list[Any]) -> dict[str, Any]:
    spans = [span for span in (_parse_port(p) for p in ports) if isinstance(span, tuple)]
    networks = [n for n in (_parse_source(s) for s in sources if s != ANY) if not isinstance(n, str)]

    def family(version: int) -> list[str]:
        nets = [n for n in networks if n.version == version]
        collapsed = ipaddress.collapse_addresses(nets)  # type: ignore[type-var]
        return [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in collapsed]

    return {
        "name": name,
        "protocol": protocol,
        "ports": _merge_ports(spans),
        "any": ANY in sources,
        "ipv4": family(4),
        "ipv6": family(6),
    }


def firewall_plan(rules: list[dict[str, Any]], ssh_port: Any, ssh_sources: Any) -> list[dict[str, Any]]:
    """The accept rules in the order the template writes them: SSH first, then firewall_rules.

    Each item: name, protocol, ports (merged, "a" or "a-b"), any (bool: no source match), ipv4 and ipv6
    (collapsed address lists, single hosts without /prefix). A rule with any false and no addresses lets
    nobody in. Call it on checked variables only (tasks/validate.yml).
    """
    plan = [_plan_rule("SSH", "tcp", [ssh_port], _sources_list(ssh_sources) or [])]
    for rule in rules:
        plan.append(_plan_rule(str(rule["name"]), str(rule.get("protocol", "tcp")), list(rule["ports"]),
                               _sources_list(rule["sources"]) or []))
    return plan


def firewall_admits(plan: list[dict[str, Any]], ssh_client: Any) -> bool:
    """Whether the plan accepts a new TCP connection described by SSH_CLIENT ("address port server_port").

    Loopback addresses are always accepted (iif lo). True when ssh_client cannot be read: nothing to check.
    """
    fields = str(ssh_client or "").split()
    if len(fields) != 3 or not fields[2].isdigit():
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(fields[0].split("%")[0])
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    port = int(fields[2])
    for rule in plan:
        if rule["protocol"] != "tcp":
            continue
        in_ports = any(low <= port <= high for low, high in
                       (tuple(int(x) for x in p.split("-")) if "-" in p else (int(p), int(p)) for p in rule["ports"]))
        if not in_ports:
            continue
        if rule["any"]:
            return True
        family = rule["ipv4"] if address.version == 4 else rule["ipv6"]
        if any(address in ipaddress.ip_network(net) for net in family):
            return True
    return False


class FilterModule:
    """The firewall role's filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "firewall_rules_problems": firewall_rules_problems,
            "firewall_port_problems": firewall_port_problems,
            "firewall_sources_problems": firewall_sources_problems,
            "firewall_plan": firewall_plan,
            "firewall_admits": firewall_admits,
        }
