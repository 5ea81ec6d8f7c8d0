"""The apps and the edge Molecule converged (playbooks/apps.yml, playbooks/edge.yml).

Hosts come from Molecule's inventory (``MOLECULE_INVENTORY_FILE``): the ``producer`` and ``consumer``
groups run the app instances, the ``nginx`` group the TLS edge. The HTTP checks run on the controller
against the edge's address, over HTTPS verified with the generated CA
(``<inventory dir>/pki/ca.crt``; ``KRAFTWERK_CA_FILE`` overrides it). The producer API key is read from
``KRAFTWERK_API_KEY`` or the lab's vault (``lab/kraftwerk-vault inventory/lab --show``).

Only the standard library (urllib, ssl, subprocess) besides testinfra, so it runs in the controller venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from http.client import HTTPResponse
from typing import Any

import pytest
import testinfra
from conftest import CA_FILE
from testinfra.utils.ansible_runner import AnsibleRunner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = AnsibleRunner(INVENTORY)

# Same defaults as playbooks/apps.yml; the inventory may override them per host.
APPS = {
    "producer": {"unit": "kraftwerk-producer", "instances": 2, "base_port": 8100},
    "consumer": {"unit": "kraftwerk-consumer", "instances": 2, "base_port": 8200},
}


def _group(name: str) -> list[str]:
    return sorted(RUNNER.get_hosts(name))


def _vars(name: str) -> dict[str, Any]:
    return RUNNER.get_variables(name)


def _testinfra(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def _instances(app: str) -> list[tuple[str, str, int]]:
    """(host, address, port) of every instance of app ("producer" / "consumer")."""
    spec = APPS[app]
    out = []
    for name in _group(app):
        hv = _vars(name)
        count = int(hv.get(f"kraftwerk_{app}_instances", spec["instances"]))
        base = int(hv.get(f"kraftwerk_{app}_base_port", spec["base_port"]))
        out.extend((name, str(hv["ansible_host"]), base + i) for i in range(count))
    return out


EDGE_HOSTS = _group("nginx")
EDGE = EDGE_HOSTS[0]
EDGE_IP = str(_vars(EDGE)["ansible_host"])
BASE = f"https://{EDGE_IP}"
APP_INSTANCES = [(app, *inst) for app in APPS for inst in _instances(app)]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(
    tls: ssl.SSLContext,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    base: str = BASE,
    timeout: float = 15,
) -> tuple[int, dict[str, str], bytes]:
    """One request without following redirects; returns status, headers (lower-case names), body."""
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls), _NoRedirect)
    try:
        resp: HTTPResponse = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
    with resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def send(tls: ssl.SSLContext, api_key: str | None, payload: bytes, key: str = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["X-API-Key"] = api_key
    path = "/api/send" + (f"?key={key}" if key else "")
    status, _, body = request(tls, path, method="POST", body=payload, headers=headers)
    return status, json.loads(body) if body else None


# --- The app hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("app", "name", "addr", "port"), APP_INSTANCES)
def test_instance_runs_hardened_on_the_host_address(app: str, name: str, addr: str, port: int) -> None:
    h = _testinfra(name)
    unit = APPS[app]["unit"]
    svc = h.service(f"{unit}@{port}")
    assert svc.is_running and svc.is_enabled
    assert h.socket(f"tcp://{addr}:{port}").is_listening
    props = h.check_output(
        f"systemctl show {unit}@{port} -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp "
        "-p ProtectHome -p CapabilityBoundingSet"
    )
    assert f"User={unit}" in props
    assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props
    assert "PrivateTmp=yes" in props and "ProtectHome=yes" in props
    assert re.search(r"^CapabilityBoundingSet=$", props, re.M), props


@pytest.mark.parametrize("app", list(APPS))
def test_env_files_are_private_and_the_code_is_root_owned(app: str) -> None:
    unit = APPS[app]["unit"]
    for name in _group(app):
        h = _testinfra(name)
        for suffix in ("env", "secrets.env"):
            f = h.file(f"/etc/{unit}/{unit}.{suffix}")
            assert f.user == "root" and f.group == unit
            assert f.mode & 0o007 == 0, oct(f.mode)
        env = h.file(f"/etc/{unit}/{unit}.env").content_string
        kafka = [f"{_vars(k)['ansible_host']}:9095" for k in _group("kafka")]
        servers = re.search(r'^KRAFTWERK_BOOTSTRAP_SERVERS="([^"]*)"', env, re.M)
        assert servers and sorted(servers.group(1).split(",")) == sorted(kafka)
        assert "API_KEYS" not in env  # secrets only in the secrets file
        venv = h.file(f"/opt/{unit}/venv")
        assert venv.is_symlink and h.file(venv.linked_to).user == "root"
        assert h.file(f"{venv.linked_to}/.pyapp-complete").exists


def test_app_hosts_need_no_compiler() -> None:
    for name in sorted(set(_group("producer")) | set(_group("consumer"))):
        h = _testinfra(name)
        assert not h.exists("gcc") and not h.exists("cc")


# --- The edge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EDGE_HOSTS)
def test_nginx_runs_with_a_valid_config(name: str) -> None:
    h = _testinfra(name)
    assert h.service("nginx").is_running and h.service("nginx").is_enabled
    assert h.run("nginx -t").rc == 0
    key = h.file("/etc/nginx/tls/server.key")
    assert key.user == "root" and key.mode == 0o600


def test_http_redirects_to_https(tls: ssl.SSLContext) -> None:
    status, headers, _ = request(tls, "/messages?x=1", base=f"http://{EDGE_IP}")
    assert status == 301
    assert headers["location"] == f"https://{EDGE_IP}/messages?x=1"


def test_certificate_verifies_against_the_generated_ca(tls: ssl.SSLContext) -> None:
    status, _, _ = request(tls, "/healthz")  # urllib raises on a failed verification
    assert status == 200
    untrusted = ssl.create_default_context()  # the system store does not know our CA
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        request(untrusted, "/healthz")


def _s_client(*args: str) -> subprocess.CompletedProcess[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed on the controller")
    return subprocess.run(
        [openssl, "s_client", "-connect", f"{EDGE_IP}:443", "-servername", EDGE, *args],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )


def test_server_refuses_tls_1_1() -> None:
    # SECLEVEL=0 lets our client offer TLS 1.1, so the failure proves that the SERVER refused it.
    result = _s_client("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "alert protocol version" in out or "unsupported protocol" in out, out


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_server_speaks_tls_1_2_and_1_3(version: str) -> None:
    result = _s_client(version, "-CAfile", str(CA_FILE), "-verify_return_error")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout


def test_security_headers(tls: ssl.SSLContext) -> None:
    status, headers, body = request(tls, "/")
    assert status == 200 and b"EventSource" in body
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers.get("server") == "nginx"  # no version


def test_send_answers_with_an_offset_and_shows_in_messages(tls: ssl.SSLContext, api_key: str) -> None:
    marker = uuid.uuid4().hex
    status, answer = send(tls, api_key, json.dumps({"test": marker}).encode(), key=marker)
    assert status == 200, answer
    assert answer["status"] == "ok" and answer["key"] == marker
    assert isinstance(answer["offset"], int) and answer["offset"] >= 0
    assert isinstance(answer["partition"], int)
    deadline = time.monotonic() + 30
    while True:
        _, _, body = request(tls, "/messages")
        found = [m for m in json.loads(body)["messages"] if m.get("key") == marker]
        if found:
            break
        assert time.monotonic() < deadline, f"message {marker} never showed in /messages"
        time.sleep(0.5)
    assert found[0]["value"] == {"test": marker}
    assert (found[0]["partition"], found[0]["offset"]) == (answer["partition"], answer["offset"])


def test_send_without_key_is_401(tls: ssl.SSLContext) -> None:
    status, answer = send(tls, None, b'{"a": 1}')
    assert status == 401 and answer["error"]


def test_send_with_a_wrong_key_is_403(tls: ssl.SSLContext) -> None:
    status, _ = send(tls, "not-the-key-" + uuid.uuid4().hex, b'{"a": 1}')
    assert status == 403


@pytest.mark.parametrize("payload", [b'{"a": ', b"[1, 2]", b"not json"])
def test_malformed_body_is_422(tls: ssl.SSLContext, api_key: str, payload: bytes) -> None:
    status, answer = send(tls, api_key, payload)
    assert status == 422, answer


@pytest.mark.parametrize("size", [1_000_001, 2 * 1024 * 1024])
def test_body_over_the_limit_is_one_json_413(tls: ssl.SSLContext, api_key: str, size: int) -> None:
    """Just over the limit and far over it: the same JSON error, whoever answers (NGINX or the app)."""
    big = b'{"x": "' + b"a" * (size - 9) + b'"}'
    status, headers, body = request(tls, "/api/send", method="POST", body=big,
                                    headers={"X-API-Key": api_key, "Content-Type": "application/json"})
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "payload_too_large"


def test_a_body_at_the_limit_is_not_refused_for_its_size(tls: ssl.SSLContext, api_key: str) -> None:
    """kraftwerk_max_body_bytes (1,000,000) fits in one Kafka record under the broker's message.max.bytes."""
    body = b'{"x": "' + b"a" * (1_000_000 - 9) + b'"}'
    assert len(body) == 1_000_000
    status, _, answer = request(tls, "/api/send", method="POST", body=body,
                                headers={"X-API-Key": api_key, "Content-Type": "application/json"})
    assert status == 200, answer


def test_utf8_kafka_headers_survive_the_edge(tls: ssl.SSLContext, api_key: str) -> None:
    marker = uuid.uuid4().hex
    req = urllib.request.Request(
        BASE + f"/api/send?key={marker}", data=json.dumps({"utf8": marker}).encode(), method="POST",
        headers={"X-API-Key": api_key, "Content-Type": "application/json"})
    req.add_header("X-Kafka-Header-City", "Zürich".encode().decode("latin-1"))  # the UTF-8 bytes on the wire
    with urllib.request.urlopen(req, context=tls, timeout=15) as resp:  # noqa: S310
        assert resp.status == 200
    deadline = time.monotonic() + 30
    while True:
        found = [m for m in json.loads(request(tls, "/messages")[2])["messages"] if m.get("key") == marker]
        if found:
            break
        assert time.monotonic() < deadline, "message with a UTF-8 header never showed"
        time.sleep(0.5)
    assert {"name": "city", "value": "Zürich", "encoding": "utf-8"} in found[0]["headers"], found[0]["headers"]


def test_invalid_unicode_is_422(tls: ssl.SSLContext, api_key: str) -> None:
    status, answer = send(tls, api_key, b'{"a": "\\ud800"}')  # a lone surrogate, JSON-escaped
    assert status == 422, answer
    assert answer["error"] == "invalid_unicode"


def test_an_idempotent_retry_through_the_edge_is_answered_once(tls: ssl.SSLContext, api_key: str) -> None:
    key = uuid.uuid4().hex
    headers = {"X-API-Key": api_key, "Content-Type": "application/json", "Idempotency-Key": key}
    answers = [request(tls, "/api/send", method="POST", body=b'{"retry": true}', headers=headers)
               for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    first, *repeats = [json.loads(a[2]) for a in answers]
    assert all((r["partition"], r["offset"]) == (first["partition"], first["offset"]) for r in repeats)
    assert all(a[1].get("idempotent-replayed") == "true" for a in answers[1:])


def test_events_stream_through_the_proxy(tls: ssl.SSLContext) -> None:
    """SSE arrives at once (no proxy buffering): the first snapshot event within a few seconds."""
    req = urllib.request.Request(BASE + "/events", headers={"Accept": "text/event-stream"})
    started = time.monotonic()
    with urllib.request.urlopen(req, context=tls, timeout=10) as resp:  # noqa: S310
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        seen = b""
        while b"event: snapshot" not in seen:
            line = resp.readline()
            assert line, "stream ended before a snapshot"
            seen += line
    assert time.monotonic() - started < 8


def test_requests_are_balanced_over_the_consumer_instances(tls: ssl.SSLContext) -> None:
    instances = set()
    for _ in range(12):
        _, _, body = request(tls, "/messages")
        instances.add(json.loads(body)["instance"])
    assert len(instances) == len(_instances("consumer")), instances


@pytest.mark.parametrize("path", ["/metrics", "/api/metrics"])
def test_metrics_are_not_public(tls: ssl.SSLContext, path: str) -> None:
    assert request(tls, path)[0] == 403


def test_unknown_paths_are_404(tls: ssl.SSLContext) -> None:
    assert request(tls, "/docs")[0] == 404
    assert request(tls, "/api/nothing-here")[0] == 404


def test_producer_docs_under_the_prefix(tls: ssl.SSLContext) -> None:
    status, _, body = request(tls, "/api/openapi.json")
    doc = json.loads(body)
    assert status == 200 and "/send" in doc["paths"]
    refs = re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', body.decode())
    assert refs and all(name in doc["components"]["schemas"] for name in refs), refs
    for code in ("200", "401", "403", "413", "422", "503", "504"):
        assert code in doc["paths"]["/send"]["post"]["responses"], code


def test_nginx_stops_sending_to_a_producer_instance_that_is_down(tls: ssl.SSLContext, api_key: str) -> None:
    """One producer instance stopped: every send still succeeds (NGINX skips it), and it comes back ready."""
    name, addr, port = _instances("producer")[0]
    h = _testinfra(name)
    unit = f"{APPS['producer']['unit']}@{port}"
    h.run_expect([0], f"systemctl stop {unit}")
    try:
        statuses = [send(tls, api_key, json.dumps({"failover": i}).encode())[0] for i in range(30)]
        assert statuses == [200] * 30, statuses
        keyed = [request(tls, "/api/send", method="POST", body=b'{"failover": "keyed"}',
                         headers={"X-API-Key": api_key, "Content-Type": "application/json",
                                  "Idempotency-Key": uuid.uuid4().hex})[0] for _ in range(10)]
        assert keyed == [200] * 10, keyed  # hashed requests whose instance is down go to another one
    finally:
        h.run_expect([0], f"systemctl start {unit}")
    deadline = time.monotonic() + 60
    while h.run(f"python3 -c \"import urllib.request; urllib.request.urlopen('http://{addr}:{port}/readyz')\"").rc:
        assert time.monotonic() < deadline, f"{unit} not ready again"
        time.sleep(1)


def test_rate_limit_answers_429(tls: ssl.SSLContext) -> None:
    """Last: a burst above the page zone's rate+burst is cut with 429 (then we let the bucket refill)."""
    codes = [request(tls, "/healthz")[0] for _ in range(150)]
    assert 429 in codes and 200 in codes, codes
    time.sleep(4)
