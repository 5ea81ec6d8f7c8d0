"""The edge's metrics servers, run for real: Debian 12's NGINX and Lua module with the role's own nginx.conf.

The role renders nginx.conf (its validate tasks, then templates/nginx.conf.j2) with the response metrics and
stub_status on, and this test runs Debian's NGINX with it, unprivileged ports and temporary paths swapped in: the
packages (nginx, libnginx-mod-http-lua and what it depends on) are downloaded with `apt-get download` and unpacked
with `dpkg-deb -x` into ~/.cache/kraftwerk/nginx-lua/ (nothing is installed). Requests that end in 2xx, 4xx and 502
(an upstream that refuses) and a redirect of the HTTP server must appear, by class, in
kraftwerk_edge_responses_total; a reload keeps the counters; the metrics answer only the allowed addresses;
stub_status answers on 127.0.0.1.

Without a Debian controller (apt-get, dpkg-deb, openssl) or its mirror the test is skipped with the reason, except
under KRAFTWERK_NGINX_LUA_REQUIRED=1 (or CI=true), where it fails. Run: .venv/bin/pytest -q roles/nginx/tests
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parent.parent
ROOT = ROLE.parent.parent
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"
# The role's packages with the Lua module, and what they depend on that a controller may lack.
PACKAGES = ["nginx", "nginx-common", "libnginx-mod-http-lua", "libnginx-mod-http-ndk", "lua-resty-core",
            "lua-resty-lrucache", "libluajit2-5.1-2", "libpcre3"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kraftwerk" / "nginx-lua"
REQUIRED = os.environ.get("KRAFTWERK_NGINX_LUA_REQUIRED") == "1" or os.environ.get("CI") == "true"


def _unusable(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"Debian's NGINX with Lua is required (KRAFTWERK_NGINX_LUA_REQUIRED=1 or CI=true): {why}")
    pytest.skip(f"{why} (KRAFTWERK_NGINX_LUA_REQUIRED=1 fails instead)")


def _debian_nginx() -> Path:
    """The unpacked packages' root (cached by the candidate version of nginx and of the Lua module)."""
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "openssl"):
        if shutil.which(tool) is None:
            _unusable(f"'{tool}' is missing: this test needs a Debian 12 controller")
    show = subprocess.run(["apt-cache", "show", "--no-all-versions", "nginx", "libnginx-mod-http-lua"],
                          capture_output=True, text=True, check=False)
    versions = re.findall(r"^Version: (\S+)$", show.stdout, re.MULTILINE)
    if len(versions) != 2:
        _unusable("apt knows no nginx / libnginx-mod-http-lua package (apt-get update?)")
    root = CACHE / "_".join(v.replace(":", "_") for v in versions)
    if (root / ".complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        os.chmod(tmp, 0o755)
        fetched = subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, capture_output=True, text=True,
                                 timeout=300, check=False)
        if fetched.returncode != 0:
            _unusable(f"apt-get download failed: {fetched.stderr.strip()}")
        staged = Path(tmp) / "root"
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staged)], check=True)
        (staged / ".complete").write_text("\n".join(PACKAGES) + "\n")
        try:
            staged.rename(root)
        except OSError:
            if not (root / ".complete").exists():
                raise
    return root


RENDER_PLAYBOOK = """\
- name: Render the nginx role's configuration
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Validate the variables
      ansible.builtin.import_role:
        name: nginx
        tasks_from: validate
    - name: Render nginx.conf
      ansible.builtin.template:
        src: "{{ ng_role }}/templates/nginx.conf.j2"
        dest: "{{ ng_out }}/nginx.conf"
        mode: "0600"
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _closed_port() -> int:
    return _free_ports(1)[0]


class Edge:
    def __init__(self, work: Path, root: Path, extra: dict[str, object] | None = None) -> None:
        self.work, self.root, self.extra = work, root, extra or {}
        self.http, self.https, self.stub, self.metrics = _free_ports(4)
        self.env = dict(os.environ, LD_LIBRARY_PATH=f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu")

    def render(self) -> str:
        out = self.work / "out"
        out.mkdir()
        (self.work / "tls").mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=edge.test", "-keyout", str(self.work / "tls/server.key"),
                        "-out", str(self.work / "tls/server.crt")], capture_output=True, check=True)
        variables = {
            "ng_role": str(ROLE), "ng_out": str(out), "nginx_listen_ipv6": False,
            "nginx_http_port": self.http, "nginx_https_port": self.https, "nginx_tls_dir": str(self.work / "tls"),
            "nginx_stub_status_port": self.stub, "nginx_response_metrics_address": "127.0.0.1",
            "nginx_response_metrics_port": self.metrics, "nginx_response_metrics_allow": ["127.0.0.1"],
            "nginx_upstreams": {"app": [f"127.0.0.1:{_closed_port()}"]},
            "nginx_locations": [{"path": "/ok", "exact": True, "status": 204},
                                {"path": "/app", "exact": True, "upstream": "app"},
                                {"path": "/", "status": 404}],
            **self.extra,
        }
        (self.work / "vars.json").write_text(json.dumps(variables))
        (self.work / "play.yml").write_text(RENDER_PLAYBOOK)
        (self.work / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(self.work / "tmp"))
        result = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(self.work / "hosts.yml"), str(self.work / "play.yml"),
                                 "-e", "@" + str(self.work / "vars.json")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return (out / "nginx.conf").read_text()

    def start(self) -> None:
        conf = self.render()
        assert "lua_shared_dict kraftwerk_edge_responses 64k;" in conf and "log_by_lua_block" in conf
        r, w = str(self.root), str(self.work)
        mods = "".join(f"load_module {r}/usr/lib/nginx/modules/{m}.so;\n" for m in ("ndk_http_module", "ngx_http_lua_module"))
        # The host paths of the real configuration, swapped for this test's (the Lua path: the packages' files).
        conf = (conf.replace("include /etc/nginx/modules-enabled/*.conf;\n", mods)
                .replace("user www-data;\n", "")
                .replace("/etc/nginx/mime.types", f"{r}/etc/nginx/mime.types")
                .replace("/var/log/nginx/", f"{w}/")
                .replace("/run/nginx.pid", f"{w}/nginx.pid")
                .replace("include /etc/nginx/conf.d/*.conf;", "")
                .replace("    lua_shared_dict", f'    lua_package_path "{r}/usr/share/lua/5.1/?.lua;;";\n'
                         + "".join(f"    {t}_temp_path {w}/{t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                         + "    lua_shared_dict"))
        (self.work / "run.conf").write_text(conf)
        nginx = [f"{r}/usr/sbin/nginx", "-p", w, "-c", f"{w}/run.conf"]
        check = subprocess.run([*nginx, "-t"], env=self.env, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        subprocess.run(nginx, env=self.env, check=True)
        self.pid = int((self.work / "nginx.pid").read_text())

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGQUIT)

    def reload(self) -> None:
        os.kill(self.pid, signal.SIGHUP)
        time.sleep(1)

    def get(self, port: int, path: str, tls: bool = False, source: str = "", method: str = "GET",
            body: bytes | None = None) -> tuple[int, str]:
        ctx = ssl._create_unverified_context() if tls else None  # noqa: S323 - the test's self-signed certificate
        conn = (http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10) if tls
                else http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                                source_address=(source, 0) if source else None))
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        status, body = self.get(self.metrics, "/metrics")
        assert status == 200, body
        return {m[0]: int(m[1]) for m in re.findall(r'^kraftwerk_edge_responses_total\{code_class="(\dxx)"\} (\d+)$',
                                                    body, re.MULTILINE)}


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    root = _debian_nginx()
    os.chmod(tmp_path, 0o755)
    e = Edge(tmp_path, root)
    e.start()
    yield e
    e.stop()


def test_responses_are_counted_by_status_class(edge: Edge) -> None:
    assert edge.counts() == {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    got = [edge.get(edge.https, path, tls=True)[0] for path in ("/ok", "/ok", "/missing", "/app")]
    assert got == [204, 204, 404, 502]
    # The HTTP server's redirects and the metrics server's own answers are not the edge's HTTPS responses.
    assert edge.get(edge.http, "/ok")[0] == 301
    time.sleep(0.2)  # the log phase runs after the response was sent
    assert edge.counts() == {"2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
    # A reload (what the role's handler does) keeps the counters.
    edge.reload()
    assert edge.counts() == {"2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}


def test_metrics_answer_only_the_allowed_addresses_and_stub_status_the_loopback(edge: Edge) -> None:
    status, body = edge.get(edge.metrics, "/metrics", source="127.0.0.2")
    assert status == 403, body
    assert edge.get(edge.metrics, "/other")[0] == 404
    status, body = edge.get(edge.stub, "/stub_status")
    assert status == 200 and body.startswith("Active connections:"), body
    assert "# TYPE kraftwerk_edge_responses_total counter" in edge.get(edge.metrics, "/metrics")[1]


class _Dropper:
    """An upstream that reads each request's head and then closes the connection without an answer (with a reset),
    as a restarting app server does to a kept-alive connection whose request arrives as it shuts down."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.requests.append(data.split(b"\r\n", 1)[0])
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.sock.close()


class _Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b"acknowledged"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_post_dropped_by_a_restarting_server_goes_to_the_standby_only_where_allowed(tmp_path: Path) -> None:
    """retry_non_idempotent: a POST whose connection the first server drops is answered by the standby, not a 502.

    Without the option NGINX never sends a POST twice, and the client gets the 502."""
    root = _debian_nginx()
    os.chmod(tmp_path, 0o755)
    dropper = _Dropper()
    answer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=answer.serve_forever, daemon=True).start()
    servers = [f"127.0.0.1:{dropper.port}", f"127.0.0.1:{answer.server_address[1]}"]
    edge = Edge(tmp_path, root, {
        "nginx_upstreams": {"app": [f"127.0.0.1:{_closed_port()}"], "flaky": servers},
        # The answering server is a standby: NGINX always tries the dropping one first.
        "nginx_upstream_backup": {"flaky": servers[1:]},
        "nginx_upstream_max_fails": 0,
        "nginx_locations": [{"path": "/retried", "exact": True, "upstream": "flaky", "retry_non_idempotent": True},
                            {"path": "/plain", "exact": True, "upstream": "flaky"},
                            {"path": "/", "status": 404}],
    })
    edge.start()
    try:
        assert edge.get(edge.https, "/plain", tls=True, method="POST", body=b"{}")[0] == 502
        assert edge.get(edge.https, "/retried", tls=True, method="POST", body=b"{}") == (200, "acknowledged")
        # Both requests did reach the dropping server first.
        assert dropper.requests == [b"POST /plain HTTP/1.1", b"POST /retried HTTP/1.1"], dropper.requests
    finally:
        edge.stop()
        answer.shutdown()
        dropper.close()
