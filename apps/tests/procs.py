"""Run the real console entry points as subprocesses for the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class AppProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_http(self, path: str = "/healthz", status: int = 200, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            try:
                resp = httpx.get(self.url + path, timeout=5)
                if resp.status_code == status:
                    return
                last = f"{resp.status_code} {resp.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}{path} not {status} after {timeout}s: {last}\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_app(kind: str, env: dict[str, str], log_dir: Path) -> AppProcess:
    """Start ``kraftwerk-<kind>`` (via ``python -m``) with KRAFTWERK_* environment."""
    port = free_port()
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KRAFTWERK_", "PROMETHEUS_"))
    }
    full_env.update({"KRAFTWERK_HOST": HOST, "KRAFTWERK_PORT": str(port), **env})
    log_path = log_dir / f"{kind}-{port}.log"
    out = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", f"kraftwerk_apps.{kind}"],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return AppProcess(kind, port, process, log_path, env)
