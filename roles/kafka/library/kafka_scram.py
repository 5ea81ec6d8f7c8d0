#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kraftwerk
# License: Apache-2.0
"""Keep Kafka SCRAM users and their passwords as declared, through the kafka-configs CLI."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_scram
short_description: Keep Apache Kafka SCRAM users and passwords as declared, without passwords on command lines
description:
  - Reads the cluster's SCRAM credentials with one C(kafka-configs --describe --entity-type users) call and sets
    the credential of every declared user whose mechanism is missing, whose iteration count differs, or whose
    password differs from the one last set by this module.
  - Kafka only keeps a salted hash, so a password cannot be compared with the cluster. The module keeps, in
    O(state_file) on the host it runs on, an HMAC-SHA256 fingerprint of user name, mechanism, iterations and
    password for each credential it set, keyed with a random key generated on the first write and stored in
    the same file (root, mode 0600). The plain password is never stored. Without a fingerprint (first run,
    lost state file) the declared password is set again, which is harmless.
  - A credential is set with C(kafka-configs --alter --entity-type users --entity-name NAME --add-config-file
    FILE), one call per user and mechanism (Kafka refuses two changes of one user in one request). FILE is a
    mode 0600 file in a fresh mode 0700 directory, removed right after the call; the password is never on a
    command line, in the module's arguments shown in logs (C(no_log)) or in its results.
  - Users that Kafka has but that are not declared are reported in C(undeclared) and never removed.
  - Passwords and user names with characters that Kafka's SCRAM tooling or client JAAS configs cannot carry
    (C(,) C([) C(]) C(") C(') C(\) whitespace, control characters; in names also C(=)) are refused before
    anything is run.
version_added: "1.0.0"
author: kraftwerk
options:
  bootstrap_server:
    description: Kafka bootstrap server(s), C(host:port[,host:port...]).
    type: str
    required: true
  command_config:
    description:
      - Client properties file passed as C(--command-config) (TLS, SASL credentials of an admin).
      - When it names a declared user (C(username="...") in C(sasl.jaas.config)), that user's credential is
        changed last, so that the other changes are made with the credential the file still holds.
    type: path
  kafka_configs_bin:
    description: Path of the kafka-configs launcher (runs kafka.admin.ConfigCommand).
    type: path
    default: /usr/local/bin/kafka-configs
  users:
    description: The declared SCRAM credentials. A user may be declared once per mechanism.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: User name (the principal is C(User:name)).
        type: str
        required: true
      password:
        description: The password. Not C(,) C([) C(]) C(") C(') C(\), whitespace or control characters.
        type: str
        required: true
      mechanism:
        description: SCRAM mechanism.
        type: str
        choices: [SCRAM-SHA-512, SCRAM-SHA-256]
        default: SCRAM-SHA-512
      iterations:
        description: Iteration count, 4096 to 16384 (Kafka's limits).
        type: int
        default: 8192
  state_file:
    description: Path of the fingerprint file on the host the module runs on; its directory must exist.
    type: path
    default: /etc/kafka/scram-users.state
  timeout:
    description: Seconds allowed for each CLI call before the module fails.
    type: int
    default: 120
notes:
  - Supports check mode (nothing but the describe call is run, nothing is written) and diff mode (user names,
    mechanisms and iteration counts before and after; a password change shows as C(password set)).
  - A password changed outside this module with the same mechanism and iterations is not noticed, since the
    fingerprint still matches the declaration. Delete the state file to set every declared password again.
"""

EXAMPLES = r"""
- name: Keep the SCRAM users
  kafka_scram:
    bootstrap_server: "kafka-a:9095"
    command_config: /etc/kafka/admin.properties
    users:
      - name: orders-svc
        password: "{{ vault_orders_svc_password }}"
      - name: ingest
        password: "{{ vault_ingest_password }}"
        iterations: 4096
  run_once: true
"""

RETURN = r"""
changed:
  description: Whether a credential was set (would be, in check mode).
  returned: always
  type: bool
created:
  description: Credentials that did not exist (user or mechanism missing) and were set.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: User name., type: str}
    mechanism: {description: SCRAM mechanism., type: str}
    iterations: {description: Iteration count set., type: int}
updated:
  description: Existing credentials that were set again, with the reason (never the password).
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: User name., type: str}
    mechanism: {description: SCRAM mechanism., type: str}
    iterations: {description: Iteration count set., type: int}
    reason: {description: "Why: iterations changed, password changed, or no fingerprint recorded.", type: str}
unchanged:
  description: Declared credentials that were already as declared.
  returned: always
  type: list
  elements: dict
undeclared:
  description: Names of the users that have SCRAM credentials in Kafka but are not declared (never removed).
  returned: always
  type: list
  elements: str
undeclared_credentials:
  description: Every credential Kafka has that is not declared (also other mechanisms of declared users).
  returned: always
  type: list
  elements: dict
commands:
  description: The mutating CLI command lines run (no password in them; the file they name is already gone).
  returned: always
  type: list
  elements: list
errors:
  description: The validation errors, when the module refused to act.
  returned: failure
  type: list
  elements: str
"""

import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kraftwerk_cli import CliError, run_cli

MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
STATE_VERSION = 1
REDACTED = "********"

_USER_LINE_RE = re.compile(r"^SCRAM credential configs for user-principal '(.*)' are (.*?)\s*$")
_CREDENTIAL_RE = re.compile(r"(SCRAM-SHA-(?:256|512))=iterations=(\d+)")
# Kafka's value parser for --add-config splits on ',' and strips '[' ']'; client JAAS configs quote with '"' and
# escape with '\'; whitespace and control characters do not survive the files and shells passwords go through.
_PASSWORD_FORBIDDEN_RE = re.compile(r"[,\[\]\"'\\\s\x00-\x1f\x7f]")
_NAME_FORBIDDEN_RE = re.compile(r"[,=\[\]\"'\\\s\x00-\x1f\x7f]")
_JAAS_USERNAME_RE = re.compile(r"""username\s*=\s*"([^"]*)\"""")


# --------------------------------------------------------------------------------------------------
# Pure functions: parsing, validating, planning. No I/O; unit-tested against captured CLI output.
# --------------------------------------------------------------------------------------------------

def parse_users_describe(text):
    """Parse `kafka-configs --describe --entity-type users`: {user: {mechanism: iterations}}.

    Only the SCRAM credential lines count; quota lines (also printed for users without credentials) and log
    noise are ignored.
    """
    users = {}
    for line in text.splitlines():
        m = _USER_LINE_RE.match(line)
        if not m:
            continue
        name, rest = m.groups()
        creds = users.setdefault(name, {})
        for mechanism, iterations in _CREDENTIAL_RE.findall(rest):
            creds[mechanism] = int(iterations)
    return users


def password_error(password):
    """Why Kafka's tooling cannot carry this password, or None. Never includes the password."""
    if not isinstance(password, str) or password == "":
        return "the password is empty"
    bad = sorted(set(_PASSWORD_FORBIDDEN_RE.findall(password)))
    if bad:
        shown = ", ".join("space" if c == " " else repr(c) for c in bad)
        return ("the password contains characters that Kafka's SCRAM tooling or client JAAS configs cannot carry "
                "(%s); use letters, digits and other punctuation" % shown)
    return None


def name_error(name):
    if not isinstance(name, str) or name == "":
        return "a user name must not be empty"
    if _NAME_FORBIDDEN_RE.search(name):
        return ("user name %r contains characters that Kafka's SCRAM tooling, JAAS configs or describe output "
                "cannot carry (, = [ ] \" ' \\ whitespace, control characters)" % name)
    return None


def validate_declared(users):
    """Check the declaration. Returns (errors, users normalised as dicts). Errors never contain a password."""
    errors = []
    normalised = []
    seen = set()
    for index, user in enumerate(users):
        name = user.get("name")
        where = "user #%d (%s)" % (index + 1, name)
        mechanism = user.get("mechanism") or "SCRAM-SHA-512"
        iterations = user.get("iterations")
        iterations = 8192 if iterations is None else iterations
        err = name_error(name)
        if err:
            errors.append("%s: %s" % (where, err))
        if mechanism not in MECHANISMS:
            errors.append("%s: mechanism %r must be one of %s" % (where, mechanism, ", ".join(MECHANISMS)))
        if not isinstance(iterations, int) or isinstance(iterations, bool) \
                or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            errors.append("%s: iterations must be %d to %d (Kafka's limits), got %r"
                          % (where, MIN_ITERATIONS, MAX_ITERATIONS, iterations))
        err = password_error(user.get("password"))
        if err:
            errors.append("%s: %s" % (where, err))
        if (name, mechanism) in seen:
            errors.append("%s: declared twice for %s" % (where, mechanism))
        seen.add((name, mechanism))
        normalised.append({"name": name, "password": user.get("password"), "mechanism": mechanism,
                           "iterations": iterations})
    return errors, normalised


def fingerprint(key_hex, name, mechanism, iterations, password):
    """HMAC-SHA256, keyed with the state file's key, over an unambiguous encoding of the credential."""
    message = json.dumps([name, mechanism, int(iterations), password], ensure_ascii=False).encode("utf-8")
    return hmac.new(bytes.fromhex(key_hex), message, hashlib.sha256).hexdigest()


def new_key():
    return os.urandom(32).hex()


def empty_state():
    return {"version": STATE_VERSION, "key": None, "credentials": {}}


def parse_state(text):
    """The state file's JSON -> state dict. Raises ValueError when it is not a state file of ours."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError("not a version %d state file" % STATE_VERSION)
    key = data.get("key")
    if not isinstance(key, str) or not re.match(r"^[0-9a-f]{64}\Z", key):
        raise ValueError("its key is not 64 hex digits")
    creds = data.get("credentials")
    if not isinstance(creds, dict) or not all(isinstance(v, dict) for v in creds.values()):
        raise ValueError("its credentials are not a mapping of user -> {mechanism: fingerprint}")
    return {"version": STATE_VERSION, "key": key, "credentials": creds}


def state_text(state):
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def plan_users(declared, actual, state, key_hex):
    """Compare the declaration with the cluster and the recorded fingerprints.

    declared: validate_declared output; actual: parse_users_describe output; state: parse_state output (or
    empty_state()); key_hex: the key to fingerprint with (the state's, or a new one when it has none).
    Returns a list of plans in declaration order: {name, mechanism, iterations, action: create|update|none,
    reason, fingerprint} (the password stays in the declaration).
    """
    plans = []
    recorded_key = state.get("key")
    for user in declared:
        name, mechanism, iterations = user["name"], user["mechanism"], user["iterations"]
        fp = fingerprint(key_hex, name, mechanism, iterations, user["password"])
        current = actual.get(name, {}).get(mechanism)
        recorded = state.get("credentials", {}).get(name, {}).get(mechanism) if recorded_key == key_hex else None
        if current is None:
            action, reason = "create", "%s credential missing" % mechanism
        elif current != iterations:
            action, reason = "update", "iterations %d -> %d" % (current, iterations)
        elif recorded is None:
            action, reason = "update", "no fingerprint recorded for the password (state file new or lost)"
        elif not hmac.compare_digest(recorded, fp):
            action, reason = "update", "password changed"
        else:
            action, reason = "none", ""
        plans.append({"name": name, "mechanism": mechanism, "iterations": iterations, "action": action,
                      "reason": reason, "fingerprint": fp})
    return plans


def undeclared_credentials(declared, actual):
    keys = set((u["name"], u["mechanism"]) for u in declared)
    return sorted((name, mech) for name, creds in actual.items() for mech in creds if (name, mech) not in keys)


def apply_order(plans, admin_user):
    """The changing plans, by name, with the command_config's own user last."""
    changing = [p for p in plans if p["action"] != "none"]
    return sorted(changing, key=lambda p: (p["name"] == admin_user, p["name"], p["mechanism"]))


def updated_state(state, key_hex, declared_names, done_plans):
    """The state to write: fingerprints of the credentials just set, others kept for declared users only."""
    creds = {}
    if state.get("key") == key_hex:
        for name, mechs in state.get("credentials", {}).items():
            if name in declared_names:
                creds[name] = dict(mechs)
    for plan in done_plans:
        creds.setdefault(plan["name"], {})[plan["mechanism"]] = plan["fingerprint"]
    return {"version": STATE_VERSION, "key": key_hex, "credentials": creds}


def diff_texts(actual, plans):
    """before/after: one line per credential, user names, mechanisms and iterations only."""
    before = dict(((name, mech), "iterations=%d" % it) for name, creds in actual.items() for mech, it in creds.items())
    after = dict(before)
    for plan in plans:
        if plan["action"] == "none":
            continue
        text = "iterations=%d" % plan["iterations"]
        if plan["action"] == "update" and before.get((plan["name"], plan["mechanism"])) == text:
            text += " (password set)"
        after[(plan["name"], plan["mechanism"])] = text

    def render(creds):
        return "".join("%s %s %s\n" % (name, mech, value) for (name, mech), value in sorted(creds.items()))
    return render(before), render(after)


def properties_value(text):
    """A java.util.Properties value (read as ISO-8859-1): non-ASCII as \\uXXXX; validated passwords need no more."""
    out = []
    for ch in text:
        code = ord(ch)
        if code > 0x7E:
            if code > 0xFFFF:
                code -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)))
            else:
                out.append("\\u%04x" % code)
        else:
            out.append(ch)
    return "".join(out)


def credential_file_text(mechanism, iterations, password):
    """--add-config-file content. Unlike --add-config, the file's values are not stripped of '[' ']': no brackets."""
    return "%s=iterations=%d,password=%s\n" % (mechanism, iterations, properties_value(password))


def redact(text, secrets):
    """Remove every secret, and anything printed as password=..., from CLI output."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
        escaped = properties_value(secret)
        if escaped != secret:
            text = text.replace(escaped, REDACTED)
    return re.sub(r"(password=)[^\s,\]]+", r"\1" + REDACTED, text)


def error_summary(output, max_lines=4):
    """The CLI's own error message rather than its Java stack trace and log lines."""
    lines = []
    for line in output.splitlines():
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


def jaas_username(properties_text):
    m = _JAAS_USERNAME_RE.search(properties_text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------

def _hint(output):
    if "SaslAuthenticationException" in output:
        return "the client in command_config could not authenticate; "
    if "ClusterAuthorizationException" in output:
        return ("the client in command_config may not describe or alter SCRAM users (make it a super user, or "
                "give it Describe, DescribeConfigs and Alter on the cluster); ")
    return ""


def _run(argv, timeout, secrets=()):
    """One CLI call through the shared runner (plugins/module_utils/kraftwerk_cli.py); secrets never in a message."""
    return run_cli(argv, timeout, summarize=error_summary, explain=_hint, redact=lambda output: redact(output, secrets))


class Runner:
    def __init__(self, params, tmp_base):
        self.base = [params["kafka_configs_bin"], "--bootstrap-server", params["bootstrap_server"]]
        if params.get("command_config"):
            self.base += ["--command-config", params["command_config"]]
        self.timeout = params["timeout"]
        self.tmp_base = tmp_base
        self.commands = []

    def describe(self):
        return _run(self.base + ["--describe", "--entity-type", "users"], self.timeout)

    def set_credential(self, name, mechanism, iterations, password):
        """One --alter with the credential in a 0600 file inside a fresh 0700 directory, removed afterwards."""
        tmpdir = tempfile.mkdtemp(prefix="kafka-scram-", dir=self.tmp_base)
        try:
            path = os.path.join(tmpdir, "credential.properties")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(credential_file_text(mechanism, iterations, password))
            argv = self.base + ["--alter", "--entity-type", "users", "--entity-name", name, "--add-config-file", path]
            self.commands.append(argv)
            _run(argv, self.timeout, secrets=(password,))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def read_state(path):
    """(state, problem): the empty state when the file does not exist; problem set when it is unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return empty_state(), None
    except OSError as exc:
        return None, "cannot read state file %s: %s" % (path, exc)
    try:
        return parse_state(text), None
    except ValueError as exc:
        return None, ("state file %s is unusable (%s); remove it to set every declared password again"
                      % (path, exc))


def write_state(path, state):
    """Atomically replace the state file: owner root (when run as root), mode 0600."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".scram-state-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(state_text(state))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bootstrap_server=dict(type="str", required=True),
            command_config=dict(type="path"),
            kafka_configs_bin=dict(type="path", default="/usr/local/bin/kafka-configs"),
            users=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", required=True, no_log=True),
                mechanism=dict(type="str", default="SCRAM-SHA-512", choices=list(MECHANISMS)),
                iterations=dict(type="int", default=8192),
            )),
            state_file=dict(type="path", default="/etc/kafka/scram-users.state"),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, created=[], updated=[], unchanged=[], undeclared=[], undeclared_credentials=[],
                  commands=[])
    if not params["bootstrap_server"].strip():
        module.fail_json(msg="bootstrap_server must not be empty", **result)
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second", **result)

    errors, declared = validate_declared(params["users"])
    if errors:
        module.fail_json(msg="invalid SCRAM user declaration: " + "; ".join(errors) + "; no user was changed",
                         errors=errors, **result)
    if not os.access(params["kafka_configs_bin"], os.X_OK):
        module.fail_json(msg="Kafka CLI %s not found or not executable" % params["kafka_configs_bin"], **result)
    admin_user = None
    if params["command_config"]:
        try:
            with open(params["command_config"], encoding="utf-8", errors="replace") as handle:
                admin_user = jaas_username(handle.read())
        except OSError as exc:
            module.fail_json(msg="cannot read command_config %s: %s" % (params["command_config"], exc), **result)
    state_dir = os.path.dirname(params["state_file"]) or "."
    if not os.path.isdir(state_dir):
        module.fail_json(msg="the directory of state_file %s does not exist" % params["state_file"], **result)

    state, problem = read_state(params["state_file"])
    if problem:
        module.fail_json(msg=problem, **result)
    key_hex = state["key"] or new_key()

    runner = Runner(params, module.tmpdir)
    result["commands"] = runner.commands
    try:
        actual = parse_users_describe(runner.describe())
    except CliError as exc:
        module.fail_json(msg="cannot read the SCRAM users: %s" % exc, **result)

    plans = plan_users(declared, actual, state, key_hex)
    extra = undeclared_credentials(declared, actual)
    declared_names = set(u["name"] for u in declared)
    result["undeclared"] = sorted(set(name for name, _ in extra if name not in declared_names))
    result["undeclared_credentials"] = [{"name": n, "mechanism": m, "iterations": actual[n][m]} for n, m in extra]
    result["unchanged"] = [{"name": p["name"], "mechanism": p["mechanism"], "iterations": p["iterations"]}
                           for p in plans if p["action"] == "none"]
    changing = apply_order(plans, admin_user)
    result["changed"] = bool(changing)
    if module._diff:
        before, after = diff_texts(actual, plans)
        result["diff"] = dict(before_header="SCRAM users", after_header="SCRAM users", before=before, after=after)

    def report(done_or_planned):
        for p in done_or_planned:
            entry = {"name": p["name"], "mechanism": p["mechanism"], "iterations": p["iterations"]}
            if p["action"] == "create":
                result["created"].append(entry)
            else:
                entry["reason"] = p["reason"]
                result["updated"].append(entry)

    if module.check_mode or not changing:
        report(changing)
        module.exit_json(**result)

    passwords = dict(((u["name"], u["mechanism"]), u["password"]) for u in declared)
    done = []
    failure = None
    for plan in changing:
        try:
            runner.set_credential(plan["name"], plan["mechanism"], plan["iterations"],
                                  passwords[(plan["name"], plan["mechanism"])])
        except CliError as exc:
            failure = "cannot set the %s credential of %s: %s" % (plan["mechanism"], plan["name"], exc)
            break
        done.append(plan)
    report(done)
    if done:
        try:
            write_state(params["state_file"], updated_state(state, key_hex, declared_names, done))
        except OSError as exc:
            failure = ((failure + "; ") if failure else "") + (
                "the credentials were set but state file %s could not be written (%s): the next run sets them "
                "again" % (params["state_file"], exc))
    if failure:
        result["changed"] = bool(done)
        module.fail_json(msg="%s. Already set: %s" % (failure, ", ".join("%s (%s)" % (p["name"], p["mechanism"])
                                                                          for p in done) or "nothing"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
