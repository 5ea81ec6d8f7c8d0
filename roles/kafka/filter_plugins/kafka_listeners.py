"""Filters that turn the declared listeners (kafka_listeners) into server.properties keys.

The listeners are data: each has a name, port, protocol, SASL mechanism and which traffic it carries
(client, inter_broker, controller). From them and a node's *current* server.properties, these filters
derive the owned keys for one phase of a change of listeners (e.g. the PLAINTEXT -> SASL_SSL migration):

  phase 1  add the new listeners next to the old ones; the authorizer goes on (User:ANONYMOUS stays a
           super user while an old PLAINTEXT listener carries node or client traffic)
  phase 2  inter-broker and controller traffic move to the new listeners (the voters move with them)
  phase 3  the old listeners are dropped: the declared configuration exactly

A node without old listeners is in phase 3; each phase is one rolling restart.
"""

from __future__ import annotations

from typing import Any

SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def kafka_parse_properties(text: str | None) -> dict[str, str]:
    """The key=value lines of a server.properties the role wrote (one line per key, no continuations)."""
    props: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _listener_entries(value: str | None) -> list[tuple[str, str]]:
    """'A://h:1,B://h:2' -> [('A', 'A://h:1'), ('B', 'B://h:2')]."""
    return [(entry.split("://", 1)[0].upper(), entry) for entry in _split(value) if "://" in entry]


def _protocol_map(value: str | None) -> dict[str, str]:
    return {k.strip().upper(): v.strip() for k, v in (e.split(":", 1) for e in _split(value) if ":" in e)}


def kafka_old_listeners(current: dict[str, str], listeners: list[dict[str, Any]]) -> list[str]:
    """Names of the listeners a node runs today that are not declared any more."""
    declared = {item["name"].upper() for item in listeners}
    return [name for name, _ in _listener_entries(current.get("listeners")) if name not in declared]


def kafka_node_phase(current: dict[str, str], listeners: list[dict[str, Any]]) -> int:
    """0: old listeners only, 1: old and new, 2: traffic moved to the new ones, 3: declared state (or new node)."""
    if not current or not kafka_old_listeners(current, listeners):
        return 3
    present = {name for name, _ in _listener_entries(current.get("listeners"))}
    declared_here = {item["name"].upper() for item in listeners}
    if not declared_here & present:
        return 0
    controller = next((i["name"].upper() for i in listeners if i.get("controller")), None)
    first_controller = (_split(current.get("controller.listener.names")) or [""])[0].upper()
    return 2 if first_controller == controller else 1


def _jaas(username: str | None = None, password: str | None = None) -> str:
    creds = f' username="{username}" password="{password}"' if username else ""
    return f"{SCRAM_MODULE} required{creds};"


def kafka_listener_properties(ctx: dict[str, Any], phase: int) -> dict[str, str]:
    """The owned listener/security keys of one node for one phase (see the module docstring).

    ctx: listeners, current (the node's current properties), is_broker, is_controller, bind_address,
    advertised_host, voters (the declared controller.quorum.voters), broker_user, broker_password,
    super_users (declared, without ANONYMOUS), authorizer (bool), tls (dict of ssl.* keys, empty when no
    listener uses TLS).
    """
    listeners = [dict(item, name=item["name"].upper()) for item in ctx["listeners"]]
    current = ctx.get("current") or {}
    is_broker, is_controller = bool(ctx["is_broker"]), bool(ctx["is_controller"])
    controller = next(i for i in listeners if i.get("controller"))
    inter = next(i for i in listeners if i.get("inter_broker"))

    def bound(item: dict[str, Any]) -> bool:
        return (is_controller if item.get("controller") else is_broker)

    new_listen = [f"{i['name']}://{ctx['bind_address']}:{i['port']}" for i in listeners if bound(i)]
    new_adv = [f"{i['name']}://{i.get('advertised_host') or ctx['advertised_host']}:{i['port']}"
               for i in listeners if is_broker and not i.get("controller")]
    new_map = {i["name"]: i["protocol"] for i in listeners}

    old_names = kafka_old_listeners(current, listeners) if phase < 3 else []
    old_listen = [e for n, e in _listener_entries(current.get("listeners")) if n in old_names]
    old_adv = [e for n, e in _listener_entries(current.get("advertised.listeners")) if n in old_names]
    cur_map = _protocol_map(current.get("listener.security.protocol.map"))
    old_map = {n: cur_map.get(n, "PLAINTEXT") for n in old_names}
    # Old controller listener names: those of today's controller.listener.names that are not declared.
    declared = {i["name"] for i in listeners}
    old_ctrl = [n.upper() for n in _split(current.get("controller.listener.names")) if n.upper() not in declared] \
        if phase < 3 else []
    for name in old_ctrl:  # a broker-only node does not bind its controller listener, but maps it
        old_map.setdefault(name, cur_map.get(name, "PLAINTEXT"))

    props: dict[str, str] = {
        "listeners": ",".join(old_listen + new_listen),
        "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in {**old_map, **new_map}.items()),
    }
    if phase == 1:
        props["controller.listener.names"] = ",".join(old_ctrl + [controller["name"]])
        props["controller.quorum.voters"] = current.get("controller.quorum.voters", ctx["voters"])
    else:
        props["controller.listener.names"] = ",".join([controller["name"]] + old_ctrl)
        props["controller.quorum.voters"] = ctx["voters"]
    if is_broker:
        props["advertised.listeners"] = ",".join(old_adv + new_adv)
        if phase == 1 and current.get("inter.broker.listener.name"):
            props["inter.broker.listener.name"] = current["inter.broker.listener.name"]
            if current.get("sasl.mechanism.inter.broker.protocol"):
                props["sasl.mechanism.inter.broker.protocol"] = current["sasl.mechanism.inter.broker.protocol"]
        else:
            props["inter.broker.listener.name"] = inter["name"]
            if inter["protocol"].startswith("SASL_"):
                props["sasl.mechanism.inter.broker.protocol"] = inter["sasl_mechanism"]

    for item in listeners:
        if not bound(item) and not (item.get("inter_broker") and is_broker):
            continue
        prefix = "listener.name." + item["name"].lower()
        if item["protocol"].startswith("SASL_"):
            mech = item["sasl_mechanism"]
            props[f"{prefix}.sasl.enabled.mechanisms"] = mech
            if item.get("inter_broker"):
                props[f"{prefix}.{mech.lower()}.sasl.jaas.config"] = _jaas(ctx["broker_user"], ctx["broker_password"])
            else:
                props[f"{prefix}.{mech.lower()}.sasl.jaas.config"] = _jaas()
        if item["protocol"] == "SSL" and item.get("controller"):
            # Mutual TLS between the nodes: the certificate's CN is the node's principal.
            props[f"{prefix}.ssl.client.auth"] = "required"
    props.update(ctx.get("tls") or {})

    if ctx.get("authorizer"):
        supers = list(ctx["super_users"])
        old_plain = [n for n in old_names if old_map.get(n, "PLAINTEXT") in ("PLAINTEXT", "SSL")]
        node_plain = [i["name"] for i in listeners if (i.get("controller") or i.get("inter_broker"))
                      and i["protocol"] == "PLAINTEXT"]
        if old_plain or node_plain:
            # Until every node and client has moved off the old listener, its anonymous traffic keeps working.
            supers.append("User:ANONYMOUS")
        props["authorizer.class.name"] = AUTHORIZER
        props["allow.everyone.if.no.acl.found"] = "false"
        props["super.users"] = ";".join(dict.fromkeys(supers))
    return props


def kafka_voter_ids(voters: str | None) -> list[int]:
    """'1@h1:9093,2@h2:9093' (controller.quorum.voters) -> [1, 2], sorted."""
    return sorted(int(v.split("@", 1)[0]) for v in _split(voters) if v.split("@", 1)[0].strip().isdigit())


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "kafka_parse_properties": kafka_parse_properties,
            "kafka_old_listeners": kafka_old_listeners,
            "kafka_node_phase": kafka_node_phase,
            "kafka_listener_properties": kafka_listener_properties,
            "kafka_voter_ids": kafka_voter_ids,
        }
