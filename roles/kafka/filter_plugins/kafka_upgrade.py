"""Filters for a change of kafka_version on a running cluster: what may be done, and what it would do.

A node's versions come from the kafka_node_version module: `installed` (what /opt/kafka/current points at) and
`running` (what its JVM loaded). The cluster's finalized metadata.version comes from the kafka_features module.
`releases` is vars/main.yml's kafka_releases: version -> {metadata_version: the highest level it supports, ...}.
"""

from __future__ import annotations

import re
from typing import Any

_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_LEVEL_RE = re.compile(r"^([0-9]+)\.([0-9]+)-IV([0-9]+)$")


def kafka_version_key(version: str) -> list[int]:
    """'3.9.1' -> [3, 9, 1]: a release version, comparable (ValueError for anything else)."""
    text = str(version).strip()
    if not _VERSION_RE.match(text):
        raise ValueError(f"not a Kafka release version (e.g. 3.9.1): {version!r}")
    return [int(x) for x in text.split(".")]


def kafka_metadata_key(level: str) -> list[int]:
    """'3.9-IV0' -> [3, 9, 0]: a metadata.version level, comparable (ValueError for anything else)."""
    m = _LEVEL_RE.match(str(level).strip())
    if not m:
        raise ValueError(f"not a metadata.version level (e.g. 3.9-IV0): {level!r}")
    return [int(x) for x in m.groups()]


def kafka_upgrade_errors(nodes: dict[str, dict[str, Any]], target: str, releases: dict[str, dict[str, Any]],
                         finalized: str = "", allow_downgrade: bool = False) -> list[str]:
    """Why moving the cluster to `target` must not go ahead (empty: it may).

    nodes: host -> {installed, running} ('' when unknown: a new node, or a node that does not run).
    A version below what any node has installed or runs is a downgrade: refused unless allow_downgrade. A target
    whose highest metadata.version is below the cluster's finalized one is always refused: its nodes would not
    start on that metadata (Kafka refuses to run a metadata.version it does not know).
    """
    errors: list[str] = []
    if target not in releases:
        return [f"Kafka {target} is not one of the supported versions ({', '.join(kafka_supported_versions(releases))})"]
    want = kafka_version_key(target)
    higher = []
    for host in sorted(nodes):
        info = nodes[host] or {}
        for what in ("running", "installed"):
            have = str(info.get(what) or "")
            if not have or not _VERSION_RE.match(have):
                continue
            if kafka_version_key(have) > want:
                higher.append(f"{host} {'runs' if what == 'running' else 'has installed'} {have}")
                break
    if higher and not allow_downgrade:
        errors.append(
            f"kafka_version {target} is lower than what the cluster has: {'; '.join(higher)}. The role never "
            "downgrades silently: set kafka_version to the version the nodes run, or, to downgrade on purpose, set "
            "kafka_allow_downgrade: true (only possible while the finalized metadata.version is one "
            f"{target} supports; see README.md, Upgrading Kafka)")
    if finalized:
        supported = str(releases[target].get("metadata_version", ""))
        if kafka_metadata_key(supported) < kafka_metadata_key(finalized):
            errors.append(
                f"the cluster's finalized metadata.version is {finalized}, and Kafka {target} supports at most "
                f"{supported}: its nodes would not start. A finalized metadata.version is never lowered by the "
                "role (kafka_allow_downgrade does not change this); keep kafka_version at a release that supports "
                f"{finalized}")
    return errors


def kafka_supported_versions(releases: dict[str, Any]) -> list[str]:
    """The versions of kafka_releases, oldest first."""
    return sorted(releases, key=kafka_version_key)


def kafka_upgrade_summary(nodes: dict[str, dict[str, Any]], target: str) -> dict[str, list[str]]:
    """Which nodes move to `target` (running or installed differs), by their current version: {'3.8.1': [hosts]}."""
    moves: dict[str, list[str]] = {}
    for host in sorted(nodes):
        info = nodes[host] or {}
        have = str(info.get("running") or info.get("installed") or "")
        if have and (have != target or str(info.get("installed") or target) != target):
            moves.setdefault(have, []).append(host)
    return moves


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "kafka_version_key": kafka_version_key,
            "kafka_metadata_key": kafka_metadata_key,
            "kafka_upgrade_errors": kafka_upgrade_errors,
            "kafka_supported_versions": kafka_supported_versions,
            "kafka_upgrade_summary": kafka_upgrade_summary,
        }
