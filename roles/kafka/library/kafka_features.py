#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Read, and raise, a KRaft cluster's finalized metadata.version through the kafka-features CLI."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_features
short_description: Read a Kafka cluster's finalized metadata.version, or upgrade it to a given level
description:
  - Runs C(kafka-features describe) and returns the cluster's features, among them the finalized
    C(metadata.version) (C(before)).
  - With C(metadata_version), raises the finalized C(metadata.version) to that level
    (C(kafka-features upgrade --metadata <level>)), then reads it again until the cluster reports it
    (C(after)). Already at that level, it changes nothing. It never lowers it: a finalized level above
    C(metadata_version) fails the task (a metadata downgrade can lose metadata and is not this module's job).
  - The controller refuses the upgrade unless every registered broker and controller supports the level; its
    error is returned as it is.
version_added: "1.1.0"
author: kraftwerk
options:
  bootstrap_server:
    description: Kafka bootstrap server(s), C(host:port[,host:port...]), of the brokers.
    type: str
    required: true
  command_config:
    description: Optional client properties file passed as C(--command-config) (TLS, SASL).
    type: path
  metadata_version:
    description:
      - The C(metadata.version) to finalize, as C(<major>.<minor>-IV<n>) (e.g. C(3.9-IV0)).
      - Omitted, the module only reads the features.
    type: str
  kafka_features_cmd:
    description:
      - The command that runs Kafka's FeatureCommand (C(org.apache.kafka.tools.FeatureCommand)), as a list:
        the C(kafka-features) launcher, or the java command line that runs the class.
    type: list
    elements: str
    default: [/usr/local/bin/kafka-features]
  timeout:
    description: Seconds to wait for the cluster to report the new level after an upgrade.
    type: int
    default: 120
notes:
  - In check mode the module reads the features and reports whether it would upgrade, without upgrading.
"""

EXAMPLES = r"""
- name: Finalize metadata.version 3.9-IV0
  kafka_features:
    bootstrap_server: "10.0.0.1:9095,10.0.0.2:9095"
    command_config: /etc/kafka/admin.properties
    metadata_version: 3.9-IV0
    kafka_features_cmd: [/usr/local/bin/kafka-features]
"""

RETURN = r"""
before:
  description: The finalized metadata.version before the module ran (empty when none is finalized).
  returned: always
  type: str
after:
  description: The finalized metadata.version afterwards (in check mode, the one it would be).
  returned: always
  type: str
supported_max:
  description: The highest metadata.version the answering node supports.
  returned: always
  type: str
features:
  description: Every feature the cluster reports, name -> supported_min, supported_max, finalized, epoch.
  returned: always
  type: dict
"""

import re
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

_FIELD_RE = re.compile(r"^\s*([A-Za-z]+):\s*(.*)$")
_LEVEL_RE = re.compile(r"^([0-9]+)\.([0-9]+)-IV([0-9]+)$")
METADATA = "metadata.version"


# --------------------------------------------------------------------------------------------------
# Pure functions (unit-tested against captured CLI output).
# --------------------------------------------------------------------------------------------------

def metadata_key(level):
    """'3.9-IV0' -> (3, 9, 0), comparable; ValueError for anything else."""
    m = _LEVEL_RE.match((level or "").strip())
    if not m:
        raise ValueError("not a metadata.version level (<major>.<minor>-IV<n>): %r" % (level,))
    return tuple(int(x) for x in m.groups())


def parse_describe(text):
    """`kafka-features describe` -> {feature: {supported_min, supported_max, finalized, epoch}}.

    Each feature is one tab-separated line: `Feature: metadata.version<TAB>SupportedMinVersion: 3.0-IV1<TAB>
    SupportedMaxVersion: 3.9-IV0<TAB>FinalizedVersionLevel: 3.8-IV0<TAB>Epoch: 12`. A feature that is supported
    but not finalized has an empty or '-' level.
    """
    out = {}
    for line in (text or "").splitlines():
        if not line.lstrip().startswith("Feature:"):
            continue
        fields = {}
        for part in line.strip("\r\n").split("\t"):
            m = _FIELD_RE.match(part)
            if m:
                fields[m.group(1)] = m.group(2).strip()
        name = fields.get("Feature", "")
        if not name:
            continue
        finalized = fields.get("FinalizedVersionLevel", "")
        if name == METADATA and not _LEVEL_RE.match(finalized):
            finalized = ""  # not finalized (a level, never "-" or "0", once it is)
        out[name] = {
            "supported_min": fields.get("SupportedMinVersion", ""),
            "supported_max": fields.get("SupportedMaxVersion", ""),
            "finalized": finalized,
            "epoch": fields.get("Epoch", ""),
        }
    return out


def plan(finalized, supported_max, target):
    """What to do to reach `target`: ('none'|'upgrade', message); ValueError when it must not be done."""
    want = metadata_key(target)
    if finalized:
        have = metadata_key(finalized)
        if have == want:
            return "none", "metadata.version is already %s" % finalized
        if have > want:
            raise ValueError(
                "the finalized metadata.version %s is above %s: this module never lowers it "
                "(a metadata downgrade can lose metadata)" % (finalized, target))
    if supported_max and metadata_key(supported_max) < want:
        raise ValueError(
            "the node that answered supports metadata.version up to %s, not %s: it does not run the Kafka version "
            "that brings %s yet" % (supported_max, target, target))
    return "upgrade", "metadata.version %s -> %s" % (finalized or "(none)", target)


# --------------------------------------------------------------------------------------------------
# The module.
# --------------------------------------------------------------------------------------------------

def _base(params):
    cmd = list(params["kafka_features_cmd"]) + ["--bootstrap-server", params["bootstrap_server"]]
    if params.get("command_config"):
        cmd += ["--command-config", params["command_config"]]
    return cmd


def _run(cmd, timeout):
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %ss: %s" % (timeout, " ".join(cmd[:1] + cmd[-3:]))
    except OSError as e:
        return 127, "", str(e)
    return res.returncode, res.stdout, res.stderr


def describe(params):
    rc, out, err = _run(_base(params) + ["describe"], max(60, params["timeout"]))
    if rc != 0:
        raise RuntimeError("kafka-features describe failed (rc=%s): %s" % (rc, (err or out).strip()[-2000:]))
    features = parse_describe(out)
    if METADATA not in features:
        raise RuntimeError("kafka-features describe reported no metadata.version: %s" % out.strip()[-2000:])
    return features


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bootstrap_server=dict(type="str", required=True),
            command_config=dict(type="path"),
            metadata_version=dict(type="str"),
            kafka_features_cmd=dict(type="list", elements="str", default=["/usr/local/bin/kafka-features"]),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        features = describe(p)
    except RuntimeError as e:
        module.fail_json(msg=str(e))
    md = features[METADATA]
    result = dict(changed=False, before=md["finalized"], after=md["finalized"],
                  supported_max=md["supported_max"], features=features)
    if not p["metadata_version"]:
        module.exit_json(**result)
    try:
        action, message = plan(md["finalized"], md["supported_max"], p["metadata_version"])
    except ValueError as e:
        module.fail_json(msg=str(e), **result)
    result["msg"] = message
    if action == "none":
        module.exit_json(**result)
    result["changed"] = True
    if module.check_mode:
        result["after"] = p["metadata_version"]
        module.exit_json(**result)
    rc, out, err = _run(_base(p) + ["upgrade", "--metadata", p["metadata_version"]], max(60, p["timeout"]))
    # 3.9.1 prints "metadata.version was upgraded to 21." (rc 0), or "Could not upgrade metadata.version to 21.
    # Invalid update version 21 ... only supports versions 1-20" and "1 out of 1 operation(s) failed." (rc 1).
    if rc != 0 or "could not upgrade" in (out + err).lower():
        module.fail_json(msg="kafka-features upgrade --metadata %s failed (rc=%s): %s"
                         % (p["metadata_version"], rc, (out + err).strip()[-2000:]), **result)
    result["upgrade_output"] = out.strip()
    deadline = time.monotonic() + p["timeout"]
    while True:
        try:
            features = describe(p)
        except RuntimeError as e:
            module.fail_json(msg="upgraded, but reading it back failed: %s" % e, **result)
        result["features"] = features
        result["after"] = features[METADATA]["finalized"]
        if result["after"] == p["metadata_version"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    if result["after"] != p["metadata_version"]:
        module.fail_json(msg="kafka-features upgrade returned, but the cluster still reports metadata.version %s "
                         "after %ss" % (result["after"], p["timeout"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
