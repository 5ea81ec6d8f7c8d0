#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Keep Kafka ACLs as declared, through the kafka-acls CLI."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_acl
short_description: Keep Apache Kafka ACLs as declared (add the missing ones, report or remove the others)
description:
  - Lists the cluster's ACLs with one C(kafka-acls --list) call, expands every declared entry into one ACL per
    operation, and adds the declared ACLs that are missing, one C(kafka-acls --add) call per principal,
    permission, host and resource pattern.
  - ACLs that exist but are not declared are reported (a warning and the C(undeclared) return value) and kept,
    unless O(remove_undeclared) is true; then they are removed with C(kafka-acls --remove --force).
  - Every declared entry is validated (principal C(Type:name), operations that Kafka accepts for the resource
    type, cluster name C(kafka-cluster)) before the cluster is contacted; an invalid declaration fails the
    module with no change.
  - Needs an authorizer on the cluster (C(authorizer.class.name)); without one Kafka answers every ACL request
    with C(SECURITY_DISABLED) and the module fails saying so. The client in O(command_config) must be a super
    user or hold C(Describe) and C(Alter) on the cluster.
version_added: "1.0.0"
author: kraftwerk
options:
  bootstrap_server:
    description: Kafka bootstrap server(s), C(host:port[,host:port...]).
    type: str
    required: true
  acls:
    description: The declared ACLs. The same ACL may be declared more than once.
    type: list
    elements: dict
    required: true
    suboptions:
      principal:
        description: Principal, C(Type:name), e.g. C(User:orders-svc) or C(User:*).
        type: str
        required: true
      resource_type:
        description: Type of the resource the ACL is on.
        type: str
        required: true
        choices: [topic, group, cluster, transactional_id]
      name:
        description:
          - Resource name, or name prefix with O(acls[].pattern_type=prefixed); C(*) means every resource of the
            type.
          - For C(cluster) it must be C(kafka-cluster), which is the default there.
        type: str
      pattern_type:
        description: C(literal) matches the name exactly (or every resource for C(*)); C(prefixed) every name
          starting with it. Must be C(literal) for C(cluster).
        type: str
        choices: [literal, prefixed]
        default: literal
      operations:
        description:
          - Kafka operation names, e.g. C(Read), C(Write), C(Describe), C(Create), C(Delete), C(Alter),
            C(AlterConfigs), C(DescribeConfigs), C(IdempotentWrite), C(ClusterAction), C(All). Case and
            underscores do not matter (C(DESCRIBE_CONFIGS) is C(DescribeConfigs)).
          - Each must be valid for the resource type (Kafka's own table, checked before anything is run).
        type: list
        elements: str
        required: true
      permission:
        description: Whether the ACL allows or denies. A deny ACL wins over any allow ACL.
        type: str
        choices: [allow, deny]
        default: allow
      host:
        description: Client IP address the ACL applies to, C(*) for every host. Kafka compares IP addresses, not
          host names.
        type: str
        default: "*"
  remove_undeclared:
    description: Remove the ACLs that exist but are not declared. When false they are only reported.
    type: bool
    default: false
  kafka_acls_bin:
    description: Path of the kafka-acls launcher (runs kafka.admin.AclCommand).
    type: path
    default: /usr/local/bin/kafka-acls
  command_config:
    description: Client properties file passed as C(--command-config) (TLS, SASL credentials).
    type: path
  timeout:
    description: Seconds allowed for each CLI call before the module fails.
    type: int
    default: 120
notes:
  - Supports check mode (nothing but C(kafka-acls --list) is run) and diff mode (the cluster's ACLs before and
    after, sorted, one line per ACL).
  - Every ACL of the cluster counts, including those of users this play does not know about; with
    O(remove_undeclared=true) declare them all.
"""

EXAMPLES = r"""
- name: Keep the declared ACLs
  kafka_acl:
    bootstrap_server: "kafka-a:9095"
    command_config: /etc/kafka/admin.properties
    acls:
      - principal: User:orders-svc
        resource_type: topic
        name: orders
        operations: [Read, Describe]
      - principal: User:orders-svc
        resource_type: group
        name: orders-svc
        operations: [Read]
      - principal: User:ingest
        resource_type: topic
        name: ingest.
        pattern_type: prefixed
        operations: [Write, Describe]
      - principal: User:ingest
        resource_type: cluster
        operations: [IdempotentWrite]
  run_once: true
"""

RETURN = r"""
changed:
  description: Whether ACLs were added or removed (would be, in check mode).
  returned: always
  type: bool
added:
  description: The ACLs added (to be added, in check mode), one entry per operation.
  returned: always
  type: list
  elements: dict
  contains:
    principal: {description: Principal., type: str}
    resource_type: {description: "C(topic), C(group), C(cluster), C(transactional_id), ...", type: str}
    name: {description: Resource name or prefix., type: str}
    pattern_type: {description: C(literal) or C(prefixed)., type: str}
    operation: {description: Operation name (C(Read), C(DescribeConfigs), ...)., type: str}
    permission: {description: C(allow) or C(deny)., type: str}
    host: {description: Host (C(*) for all)., type: str}
removed:
  description: The ACLs removed (to be removed, in check mode); empty unless O(remove_undeclared) is true.
  returned: always
  type: list
  elements: dict
undeclared:
  description: The ACLs that exist but are not declared (whether or not they were removed), same entries as
    RV(added).
  returned: always
  type: list
  elements: dict
commands:
  description: The mutating CLI command lines run (empty in check mode and when nothing changed).
  returned: always
  type: list
  elements: list
errors:
  description: The validation errors, when the module refused to act.
  returned: failure
  type: list
  elements: str
"""

import os
import re
from collections import OrderedDict

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kraftwerk_cli import CliError, run_cli

# Kafka's AclOperation names (as `kafka-acls --list` prints them) -> the CLI's --operation names.
OPERATIONS = OrderedDict([
    ("ALL", "All"), ("READ", "Read"), ("WRITE", "Write"), ("CREATE", "Create"), ("DELETE", "Delete"),
    ("ALTER", "Alter"), ("DESCRIBE", "Describe"), ("CLUSTER_ACTION", "ClusterAction"),
    ("DESCRIBE_CONFIGS", "DescribeConfigs"), ("ALTER_CONFIGS", "AlterConfigs"),
    ("IDEMPOTENT_WRITE", "IdempotentWrite"), ("CREATE_TOKENS", "CreateTokens"),
    ("DESCRIBE_TOKENS", "DescribeTokens"),
])
_OPERATION_KEYS = dict((k.replace("_", ""), v) for k, v in OPERATIONS.items())

# What AclCommand accepts per resource type (its "ResourceType X only supports operations ..." check, 3.9.1).
SUPPORTED_OPERATIONS = {
    "topic": ("Read", "Write", "Create", "Describe", "Delete", "DescribeConfigs", "AlterConfigs", "Alter", "All"),
    "group": ("Read", "Describe", "Delete", "All"),
    "cluster": ("Create", "ClusterAction", "DescribeConfigs", "AlterConfigs", "IdempotentWrite", "Alter",
                "Describe", "All"),
    "transactional_id": ("Describe", "Write", "All"),
}

# Resource type -> the CLI option naming the resource. The last two are never declared, but undeclared ACLs
# on them can still be removed.
RESOURCE_OPTIONS = {
    "topic": "--topic",
    "group": "--group",
    "cluster": "--cluster",
    "transactional_id": "--transactional-id",
    "delegation_token": "--delegation-token",
    "user": "--user-principal",
}
CLUSTER_NAME = "kafka-cluster"
FIELDS = ("principal", "resource_type", "name", "pattern_type", "operation", "permission", "host")

_RESOURCE_RE = re.compile(r"^Current ACLs for resource `ResourcePattern\(resourceType=([A-Z_]+), name=(.*), "
                          r"patternType=([A-Z]+)\)`:\s*$")
_ACL_RE = re.compile(r"^\s*\(principal=(.*), host=(.*?), operation=([A-Z_]+), permissionType=([A-Z]+)\)\s*$")
_PRINCIPAL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*:\S.*\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------------------------------
# Pure functions: parsing, validating, planning. No I/O; unit-tested against captured CLI output.
# --------------------------------------------------------------------------------------------------

def operation_name(text):
    """'DescribeConfigs', 'DESCRIBE_CONFIGS', 'describe-configs' -> 'DescribeConfigs'; None when unknown."""
    if not isinstance(text, str):
        return None
    return _OPERATION_KEYS.get(re.sub(r"[\s_-]", "", text).upper())


def acl_entry(principal, resource_type, name, pattern_type, operation, permission, host):
    """One ACL, in the declaration's vocabulary (hashable: a tuple in FIELDS order)."""
    return (principal, resource_type, name, pattern_type, operation, permission, host)


def entry_dict(entry):
    return dict(zip(FIELDS, entry))


def entry_line(entry):
    """One line per ACL, for the diff and the warnings."""
    e = entry_dict(entry)
    return "%s %s %s: %s %s %s from %s" % (e["resource_type"], e["pattern_type"], e["name"], e["permission"],
                                           e["principal"], e["operation"], e["host"])


def acls_text(entries):
    return "".join(line + "\n" for line in sorted(entry_line(e) for e in entries))


def parse_acl_list(text):
    """Parse `kafka-acls --list` output into a set of ACL entries (see acl_entry).

    Resource types and pattern types are lower-cased (TRANSACTIONAL_ID -> transactional_id), operations get the
    CLI's names (DESCRIBE_CONFIGS -> DescribeConfigs; an unknown one is kept as printed), permissions allow/deny.
    Lines that are neither a resource header nor an ACL under one (log noise, blank lines) are ignored.
    """
    entries = set()
    resource = None
    for line in text.splitlines():
        header = _RESOURCE_RE.match(line)
        if header:
            rtype, name, ptype = header.groups()
            resource = (rtype.lower(), name, ptype.lower())
            continue
        acl = _ACL_RE.match(line)
        if acl is None:
            if not line.strip():
                continue
            if not line.startswith((" ", "\t")):
                resource = None
            continue
        if resource is None:
            continue
        principal, host, operation, permission = acl.groups()
        entries.add(acl_entry(principal, resource[0], resource[1], resource[2],
                              OPERATIONS.get(operation, operation), permission.lower(), host))
    return entries


def validate_declared(acls):
    """Check the declaration and expand it per operation. Returns (errors, set of entries)."""
    errors = []
    entries = set()
    for index, acl in enumerate(acls):
        where = "ACL #%d" % (index + 1)
        principal = acl.get("principal")
        rtype = acl.get("resource_type")
        ptype = acl.get("pattern_type") or "literal"
        permission = acl.get("permission") or "allow"
        host = acl.get("host")
        host = "*" if host is None else host
        name = acl.get("name")
        if rtype == "cluster" and name in (None, ""):
            name = CLUSTER_NAME
        label = "%s (%s %s %s)" % (where, principal, rtype, name)
        if not isinstance(principal, str) or not _PRINCIPAL_RE.match(principal) or _CONTROL_RE.search(principal):
            errors.append("%s: principal %r must be Type:name, e.g. User:orders-svc" % (where, principal))
        if rtype not in SUPPORTED_OPERATIONS:
            errors.append("%s: resource_type %r must be one of %s" % (where, rtype, ", ".join(SUPPORTED_OPERATIONS)))
            continue
        if ptype not in ("literal", "prefixed"):
            errors.append("%s: pattern_type %r must be literal or prefixed" % (label, ptype))
        if permission not in ("allow", "deny"):
            errors.append("%s: permission %r must be allow or deny" % (label, permission))
        if not isinstance(host, str) or not host.strip() or host != host.strip() or _CONTROL_RE.search(host):
            errors.append("%s: host %r must be * or an IP address" % (label, host))
        if rtype == "cluster":
            if name != CLUSTER_NAME:
                errors.append("%s: the cluster resource is named %s, not %r" % (label, CLUSTER_NAME, name))
            if ptype != "literal":
                errors.append("%s: cluster ACLs must have pattern_type literal" % label)
        elif not isinstance(name, str) or not name or _CONTROL_RE.search(name):
            errors.append("%s: name must be a non-empty resource name (or * for every %s)" % (label, rtype))
        operations = acl.get("operations")
        if not isinstance(operations, list) or not operations:
            errors.append("%s: operations must be a non-empty list" % label)
            continue
        for raw in operations:
            operation = operation_name(raw)
            if operation is None:
                errors.append("%s: unknown operation %r (Kafka knows %s)"
                              % (label, raw, ", ".join(OPERATIONS.values())))
            elif operation not in SUPPORTED_OPERATIONS[rtype]:
                errors.append("%s: operation %s is not valid on a %s; Kafka accepts %s"
                              % (label, operation, rtype, ", ".join(SUPPORTED_OPERATIONS[rtype])))
            else:
                entries.add(acl_entry(principal, rtype, name, ptype, operation, permission, host))
    if errors:
        return errors, set()
    return errors, entries


def plan_acls(declared, actual, remove_undeclared):
    """(to_add, undeclared, to_remove): sorted lists of entries."""
    to_add = sorted(declared - actual)
    undeclared = sorted(actual - declared)
    to_remove = list(undeclared) if remove_undeclared else []
    return to_add, undeclared, to_remove


def group_entries(entries):
    """Group ACLs that one CLI call can handle: same principal, permission, host and resource pattern.

    Returns [((principal, permission, host, resource_type, name, pattern_type), [operations])], sorted.
    """
    groups = OrderedDict()
    for e in sorted(entries):
        d = entry_dict(e)
        key = (d["principal"], d["permission"], d["host"], d["resource_type"], d["name"], d["pattern_type"])
        groups.setdefault(key, []).append(d["operation"])
    return list(groups.items())


def acl_args(action, key, operations):
    """The kafka-acls arguments (after the connection options) for one group. action: add or remove."""
    principal, permission, host, rtype, name, ptype = key
    args = ["--add"] if action == "add" else ["--remove", "--force"]
    args += ["--%s-principal" % permission, principal, "--%s-host" % permission, host]
    for operation in operations:
        args += ["--operation", operation]
    option = RESOURCE_OPTIONS[rtype]
    args += [option] if rtype == "cluster" else [option, name]
    args += ["--resource-pattern-type", ptype]
    return args


def error_summary(output, max_lines=4):
    """The CLI's own error message rather than its Java stack trace, usage text and log lines."""
    lines = []
    for line in output.splitlines():
        if re.match(r"^Option\s+Description\s*$", line):
            break  # AclCommand prints its whole usage after an argument error
        text = line.strip()
        if not text or text.startswith("at ") or re.match(r"^\.\.\. \d+ more$", text):
            continue
        text = re.sub(r"^\[[^\]]*\] [A-Z]+ ", "", text)
        if len(text) > 400:
            text = text[:400] + "..."
        if text not in lines:
            lines.append(text)
    errors = [line for line in lines if line.startswith("Error while executing")]
    caused = [line for line in lines if line.startswith("Caused by:")]
    if errors and caused and caused[-1][len("Caused by: "):] in errors[0]:
        caused = []  # the error line already says it
    picked = errors[:1] + caused[-1:]
    return " | ".join(picked or lines[-max_lines:]) or "(no output)"


def explain_failure(output):
    """A hint for the errors whose cause is not obvious from Kafka's message."""
    if "SecurityDisabledException" in output or "SECURITY_DISABLED" in output:
        return ("the cluster has no authorizer (authorizer.class.name is not set), so Kafka refuses every ACL "
                "request with SECURITY_DISABLED; ")
    if "SaslAuthenticationException" in output:
        return "the client in command_config could not authenticate; "
    if "ClusterAuthorizationException" in output:
        return ("the client in command_config is not allowed to describe or alter ACLs (make it a super user, or "
                "give it Describe and Alter on the cluster); ")
    if "only supports operations" in output:
        return "Kafka rejected an operation name (it says so for unknown names too); "
    return ""


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------

def _run(argv, timeout):
    """One CLI call through the shared runner (plugins/module_utils/kraftwerk_cli.py)."""
    return run_cli(argv, timeout, summarize=error_summary, explain=explain_failure)


class Runner:
    def __init__(self, params):
        self.base = [params["kafka_acls_bin"], "--bootstrap-server", params["bootstrap_server"]]
        if params.get("command_config"):
            self.base += ["--command-config", params["command_config"]]
        self.timeout = params["timeout"]
        self.commands = []

    def list(self):
        return _run(self.base + ["--list"], self.timeout)

    def apply(self, action, key, operations):
        argv = self.base + acl_args(action, key, operations)
        self.commands.append(argv)
        _run(argv, self.timeout)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bootstrap_server=dict(type="str", required=True),
            acls=dict(type="list", elements="dict", required=True, options=dict(
                principal=dict(type="str", required=True),
                resource_type=dict(type="str", required=True, choices=list(SUPPORTED_OPERATIONS)),
                name=dict(type="str"),
                pattern_type=dict(type="str", default="literal", choices=["literal", "prefixed"]),
                operations=dict(type="list", elements="str", required=True),
                permission=dict(type="str", default="allow", choices=["allow", "deny"]),
                host=dict(type="str", default="*"),
            )),
            remove_undeclared=dict(type="bool", default=False),
            kafka_acls_bin=dict(type="path", default="/usr/local/bin/kafka-acls"),
            command_config=dict(type="path"),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    params = module.params
    empty = dict(added=[], removed=[], undeclared=[], commands=[])
    if not params["bootstrap_server"].strip():
        module.fail_json(msg="bootstrap_server must not be empty", **empty)
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second", **empty)

    errors, declared = validate_declared(params["acls"])
    if errors:
        module.fail_json(msg="invalid ACL declaration: " + "; ".join(errors) + "; no ACL was changed",
                         errors=errors, **empty)
    if not os.access(params["kafka_acls_bin"], os.X_OK):
        module.fail_json(msg="Kafka CLI %s not found or not executable" % params["kafka_acls_bin"], **empty)
    if params["command_config"] and not os.path.isfile(params["command_config"]):
        module.fail_json(msg="command_config %s does not exist" % params["command_config"], **empty)

    runner = Runner(params)
    try:
        actual = parse_acl_list(runner.list())
    except CliError as exc:
        module.fail_json(msg="cannot list the ACLs: %s" % exc, **empty)

    to_add, undeclared, to_remove = plan_acls(declared, actual, params["remove_undeclared"])
    result = dict(changed=bool(to_add or to_remove), added=[entry_dict(e) for e in to_add],
                  removed=[entry_dict(e) for e in to_remove], undeclared=[entry_dict(e) for e in undeclared],
                  commands=runner.commands)
    if undeclared and not params["remove_undeclared"]:
        shown = [entry_line(e) for e in undeclared[:20]]
        module.warn("%d ACL(s) exist that are not declared; they are kept (remove_undeclared is false): %s%s"
                    % (len(undeclared), "; ".join(shown), "; ..." if len(undeclared) > 20 else ""))
    if module._diff:
        after = (actual | set(to_add)) - set(to_remove)
        result["diff"] = dict(before_header="ACLs", after_header="ACLs",
                              before=acls_text(actual), after=acls_text(after))
    if module.check_mode or not result["changed"]:
        module.exit_json(**result)

    done = 0
    try:
        # Add first, then remove: a replaced ACL is never missing in between.
        for key, operations in group_entries(to_add):
            runner.apply("add", key, operations)
            done += len(operations)
        for key, operations in group_entries(to_remove):
            runner.apply("remove", key, operations)
            done += len(operations)
    except CliError as exc:
        result["changed"] = done > 0
        result["msg"] = "%s. ACLs already changed before the failure: %d" % (exc, done)
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
