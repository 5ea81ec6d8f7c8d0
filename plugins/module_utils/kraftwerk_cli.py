# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Run a Kafka CLI launcher from a module: one subprocess with a timeout, its own error message on failure.

Shared by the project's modules (kafka_topic, kafka_acl, kafka_scram, kafka_reassign). Found by Ansible through
`module_utils = plugins/module_utils` (ansible.cfg, and ANSIBLE_MODULE_UTILS in the Molecule scenarios);
imported as `from ansible.module_utils.kraftwerk_cli import ...`. Pure Python, no Ansible import: the unit tests
load it directly (roles/conftest.py).
"""

from __future__ import annotations

import re
import subprocess


class CliError(Exception):
    """A CLI call that failed, timed out or could not start; the message says which and why."""


def bootstrap_of(argv):
    """The --bootstrap-server argument of a command line (for a timeout's message)."""
    for option in ("--bootstrap-server", "--bootstrap-controller"):
        if option in argv and argv.index(option) + 1 < len(argv):
            return argv[argv.index(option) + 1]
    return "the cluster"


def error_summary(output, max_lines=4):
    """The CLI's own error message rather than its Java stack trace, usage text and log lines.

    Keeps the first "Error while executing ..." line and the last "Caused by:" (unless the first already says
    it); otherwise the last `max_lines` distinct lines that are not stack frames.
    """
    lines = []
    for line in output.splitlines():
        if re.match(r"^Option\s+Description\s*$", line):
            break  # jopt-simple commands print their whole usage after an argument error
        text = line.strip()
        if not text or text.startswith("at ") or re.match(r"^\.\.\. \d+ more$", text):
            continue
        text = re.sub(r"^\[[^\]]*\] [A-Z]+ ", "", text)
        if len(text) > 400:
            text = text[:400] + "..."
        if text not in lines:
            lines.append(text)
    errors = [line for line in lines if line.startswith("Error while executing") or line.startswith("Error: ")]
    caused = [line for line in lines if line.startswith("Caused by:")]
    if errors and caused and caused[-1][len("Caused by: "):] in errors[0]:
        caused = []  # the error line already says it
    picked = errors[:1] + caused[-1:]
    return " | ".join(picked or lines[-max_lines:]) or "(no output)"


def run_cli(argv, timeout, summarize=error_summary, explain=None, redact=None):
    """Run argv (stdin closed) and return its stdout; raise CliError on a non-zero exit, a timeout or no binary.

    summarize(output) -> str picks the error message from stdout+stderr; explain(output) -> str may prefix a hint
    (ending in "; "); redact(output) -> str removes secrets before anything is put in a message.
    """
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False, universal_newlines=True)
    except subprocess.TimeoutExpired:
        raise CliError("%s did not finish within %d s (is %s reachable?)"
                       % (" ".join(argv), timeout, bootstrap_of(argv))) from None
    except OSError as exc:
        raise CliError("cannot run %s: %s" % (argv[0], exc)) from exc
    if proc.returncode != 0:
        output = proc.stdout + "\n" + proc.stderr
        if redact is not None:
            output = redact(output)
        hint = explain(output) if explain is not None else ""
        raise CliError("%s%s failed (rc=%d): %s" % (hint, " ".join(argv), proc.returncode, summarize(output)),
                       ) from None
    return proc.stdout


def run_cli_output(argv, timeout):
    """Run argv and return (returncode, stdout + stderr) without raising on a non-zero exit (timeouts still raise)."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, universal_newlines=True)
    except subprocess.TimeoutExpired:
        raise CliError("%s did not finish within %d s (is %s reachable?)"
                       % (" ".join(argv), timeout, bootstrap_of(argv))) from None
    except OSError as exc:
        raise CliError("cannot run %s: %s" % (argv[0], exc)) from exc
    return proc.returncode, proc.stdout
