#!/usr/bin/env python3
"""Headless Chromium against the consumer page behind NGINX: messages sent through the API appear live.

Standalone:
    python tests/browser/consumer_page.py --url https://10.213.5.14 --ca inventory/lab/pki/ca.crt \\
        --api-key-env KRAFTWERK_API_KEY --screenshot docs/consumer-page.png

The generated CA is trusted properly: it is imported into a throw-away NSS database (certutil, Debian
package libnss3-tools) in a temporary HOME, which is where Chromium on Linux looks for local trust anchors.
Without certutil the server certificate is first verified against the CA here (Python ssl) and then only
its public key is accepted (--ignore-certificate-errors-spki-list), never "any certificate".
"""

from __future__ import annotations

import argparse
import contextlib
import base64
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("KRAFTWERK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KRAFTWERK_CHROMEDRIVER", "/usr/bin/chromedriver")


@dataclass
class Result:
    sent: list[dict[str, Any]] = field(default_factory=list)
    seconds_to_show: float = 0.0
    console_errors: list[str] = field(default_factory=list)
    trust: str = ""
    screenshot: str | None = None


def verified_server_spki(url: str, ca_file: str) -> str:
    """Connect with Python's ssl, verify the chain and name against the CA, return the leaf's SPKI hash."""
    from cryptography import x509  # noqa: PLC0415  (ansible's own dependency, present in the venv)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=10) as raw:  # type: ignore[arg-type]
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def trust_ca_in_nss(home: Path, ca_file: str) -> bool:
    certutil = shutil.which("certutil")
    if certutil is None:
        return False
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    subprocess.run([certutil, "-A", "-d", f"sql:{db}", "-n", "kraftwerk-edge-ca", "-t", "C,,", "-i", ca_file],
                   check=True, capture_output=True)
    return True


def api_send(url: str, ca_file: str, api_key: str, value: dict[str, Any], key: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url}/api/send?key={key}", data=json.dumps(value).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": api_key},
    )
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(req, context=context, timeout=15) as resp:  # noqa: S310
        return json.loads(resp.read())  # type: ignore[no-any-return]


def missing_browser() -> list[str]:
    """What the browser tests need and this machine lacks (empty: all there)."""
    import importlib.util  # noqa: PLC0415

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install -r tests/browser/requirements.txt)")
    return missing


def require_browser() -> None:
    """In a pytest test: fail (KRAFTWERK_BROWSER_REQUIRED=1, as ./kw test sets) or skip when the browser is missing."""
    import pytest  # noqa: PLC0415

    missing = missing_browser()
    if missing:
        if os.environ.get("KRAFTWERK_BROWSER_REQUIRED") == "1":
            pytest.fail(f"missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)} (apt-get install -y chromium chromium-driver libnss3-tools)")


@contextlib.contextmanager
def browser(url: str, ca_file: str, result: Result, timeout: float = 30.0) -> Iterator[Any]:
    """Headless Chromium that trusts the lab's CA (and nothing else extra), the page at `url` loaded."""
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="kraftwerk-browser-") as tmp:
        home = Path(tmp) / "home"
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={Path(tmp) / 'profile'}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        if trust_ca_in_nss(home, ca_file):
            result.trust = "CA imported into the NSS database"
        else:
            spki = verified_server_spki(url, ca_file)
            options.add_argument(f"--ignore-certificate-errors-spki-list={spki}")
            result.trust = f"server key pinned after verifying it against the CA ({spki})"
        service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "HOME": str(home)})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.set_page_load_timeout(timeout)
            driver.get(url.rstrip("/") + "/")
            assert "kraftwerk consumer" in driver.title, f"not the consumer page: {driver.title!r}"
            yield driver
        finally:
            driver.quit()


def _console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE" or "Content Security Policy" in entry.get("message", "")]


def run(url: str, ca_file: str, api_key: str, *, screenshot: str | None = None, count: int = 3,
        timeout: float = 30.0) -> Result:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    url = url.rstrip("/")
    result = Result()
    with browser(url, ca_file, result, timeout) as driver:
        wait = WebDriverWait(driver, timeout, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "status").text == "live")
        # Marks this page load: a reload would drop it.
        driver.execute_script("window.__kraftwerkPageLoad = arguments[0];", marker := uuid.uuid4().hex)
        keys = [f"browser-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        started = time.monotonic()
        for i, key in enumerate(keys):
            result.sent.append(api_send(url, ca_file, api_key, {"browser_test": i, "key": key}, key))
        wait.until(lambda d: all(k in d.find_element(By.ID, "messages").text for k in keys))
        result.seconds_to_show = time.monotonic() - started
        assert driver.execute_script("return window.__kraftwerkPageLoad;") == marker, "the page was reloaded"
        assert driver.find_element(By.ID, "status").text == "live"
        result.console_errors = _console_errors(driver)
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(screenshot)
            result.screenshot = screenshot
    return result


def read_health(driver: Any) -> dict[str, str]:
    """The page's Cluster health section as text, by its element ids."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    def text(element_id: str) -> str:
        return str(driver.find_element(By.ID, element_id).text).strip()

    section = driver.find_element(By.ID, "cluster-health")
    return {"state": str(section.get_attribute("data-state") or ""), "badge": text("health-state"),
            "brokers": f"{text('health-brokers-up')} / {text('health-brokers-total')}",
            "urp": text("health-urp"), "under_min_isr": text("health-under-min-isr"),
            "messages_in": text("health-messages-in"), "lag": text("health-consumer-lag"),
            "alerts": text("health-alerts"), "message": text("health-message")}


def health(url: str, ca_file: str, *, until: Callable[[dict[str, str]], bool], screenshot: str | None = None,
           timeout: float = 60.0) -> dict[str, str]:
    """Open the page and wait (up to `timeout`) until its Cluster health section satisfies `until`; the
    section scrolled into view for the screenshot. Fails with the last reading when it never does."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    result = Result()
    last: dict[str, str] = {}
    with browser(url, ca_file, result) as driver:
        def ready(d: Any) -> bool:
            nonlocal last
            last = read_health(d)
            return until(last)

        try:
            WebDriverWait(driver, timeout, poll_frequency=1.0).until(ready)
        except Exception as exc:  # selenium's TimeoutException: say what the page showed
            raise AssertionError(f"the health section never matched within {timeout}s; last: {last}") from exc
        errors = _console_errors(driver)
        assert errors == [], errors
        if screenshot:
            driver.execute_script("arguments[0].scrollIntoView();", driver.find_element(By.ID, "cluster-health"))
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(screenshot)
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="edge base URL, e.g. https://10.213.5.14")
    parser.add_argument("--ca", required=True, help="CA certificate (PEM) the edge certificate chains to")
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--api-key-file", help="file whose first word is a producer API key")
    key.add_argument("--api-key-env", help="environment variable holding a producer API key")
    parser.add_argument("--screenshot", default=None, help="save a PNG of the page here")
    parser.add_argument("--count", type=int, default=3, help="messages to send")
    args = parser.parse_args()
    api_key = (Path(args.api_key_file).read_text().split()[0] if args.api_key_file
               else os.environ[args.api_key_env])
    result = run(args.url, args.ca, api_key, screenshot=args.screenshot, count=args.count)
    print(json.dumps(result.__dict__, indent=2, default=str))
    return 1 if result.console_errors else 0


if __name__ == "__main__":
    sys.exit(main())
