#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Which Kafka version a node has installed, and which one its running JVM actually runs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_node_version
short_description: Read the Kafka version a node has installed and the one its running process runs
description:
  - C(installed) is the version of the distribution the C(current_dir) link points at, read from the name of
    its C(libs/kafka_<scala>-<version>.jar) (the link's target directory name when there is no such jar).
  - C(running) is the version the running Kafka JVM loaded: the service's main PID (C(systemctl show)), then
    the Kafka core jar among the files it holds open (C(/proc/<pid>/fd)). The kernel resolves links when a file
    is opened, so a JVM started before C(current) moved still shows the old version's directory: the link alone
    does not tell what runs.
  - Reads only; never changes anything.
version_added: "1.1.0"
author: kraftwerk
options:
  service:
    description: The systemd unit of the Kafka node.
    type: str
    default: kafka
  current_dir:
    description: The link to the installed distribution (C(<kafka_install_root>/current)).
    type: path
    default: /opt/kafka/current
"""

EXAMPLES = r"""
- name: Read which Kafka version this node has installed and runs
  kafka_node_version:
    current_dir: /opt/kafka/current
  register: _version
"""

RETURN = r"""
installed:
  description: The version C(current_dir) points at; empty when there is none.
  returned: always
  type: str
running:
  description: The version the running Kafka process loaded; empty when the service does not run.
  returned: always
  type: str
pid:
  description: The service's main PID (0 when it does not run).
  returned: always
  type: int
jar:
  description: The Kafka core jar the running process holds open (its real path).
  returned: always
  type: str
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

# kafka_2.13-3.9.1.jar (the core jar: kafka.Kafka lives there), not -sources/-test/-javadoc jars.
_CORE_JAR_RE = re.compile(r"(?:^|/)kafka_[0-9]+\.[0-9]+-([0-9][0-9A-Za-z.]*?)\.jar$")


# --------------------------------------------------------------------------------------------------
# Pure functions (unit-tested with a fake /proc and install tree, and against a real JVM).
# --------------------------------------------------------------------------------------------------

def jar_version(path):
    """The Kafka version in a core jar's path, or '' when the path is not a Kafka core jar."""
    m = _CORE_JAR_RE.search(path or "")
    return m.group(1) if m else ""


def installed_version(current_dir):
    """The version of the distribution `current_dir` points at ('' when the link is missing)."""
    if not os.path.exists(current_dir):
        return ""
    real = os.path.realpath(current_dir)
    try:
        names = sorted(os.listdir(os.path.join(real, "libs")))
    except OSError:
        names = []
    for name in names:
        version = jar_version(name)
        if version:
            return version
    return os.path.basename(real.rstrip("/"))


def running_jar(pid, proc="/proc"):
    """The real path of the Kafka core jar process `pid` holds open, or '' (no such process or jar)."""
    if not pid:
        return ""
    fd_dir = os.path.join(proc, str(pid), "fd")
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return ""
    for fd in sorted(fds, key=lambda x: int(x) if x.isdigit() else 0):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if jar_version(target):
            return target
    return ""


def main_pid(module, service):
    rc, out, _ = module.run_command(["systemctl", "show", "--property", "MainPID", "--value", service])
    out = (out or "").strip()
    return int(out) if rc == 0 and out.isdigit() else 0


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type="str", default="kafka"),
            current_dir=dict(type="path", default="/opt/kafka/current"),
        ),
        supports_check_mode=True,
    )
    pid = main_pid(module, module.params["service"])
    jar = running_jar(pid)
    module.exit_json(
        changed=False,
        installed=installed_version(module.params["current_dir"]),
        running=jar_version(jar),
        pid=pid,
        jar=jar,
    )


if __name__ == "__main__":
    main()
