"""Run the real console entry points as subprocesses for the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

HOST = "127.0.0.1"
T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout: float = 30, what: str = "", every: float = 0.25
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds.

    Tests wait for conditions with deadlines, never for fixed times.  A check may raise
    ``httpx.HTTPError`` or ``AssertionError`` to say "not yet" (the last one is reported).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
        except (httpx.HTTPError, AssertionError) as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(every)


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

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself; its exit status."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s:\n{self.log()}"
            ) from None

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


@contextmanager
def running_apps(
    kind: str, env: dict[str, str], log_dir: Path, count: int
) -> Iterator[list[AppProcess]]:
    """``count`` instances of ``kraftwerk-<kind>``, each ready (``/readyz`` 200), then stopped."""
    apps = [start_app(kind, env, log_dir) for _ in range(count)]
    try:
        for app in apps:
            app.wait_http("/readyz", 200)
        yield apps
    finally:
        for app in apps:
            app.stop()
