"""Browser test of the consumer page through NGINX (pytest wrapper around consumer_page.run).

Configuration, first match wins:
  * KRAFTWERK_EDGE_URL, KRAFTWERK_CA_FILE and KRAFTWERK_API_KEY (or KRAFTWERK_API_KEY_FILE);
  * MOLECULE_INVENTORY_FILE (the Molecule verify step): the first host of group `nginx`, and the CA and
    API key from the lab's vault (pki/ca.crt beside the inventory; lab/kraftwerk-vault inventory/lab --show).
KRAFTWERK_SCREENSHOT: where to save the PNG (default: the system's temporary directory, so that a test run
leaves the work tree clean; point it at docs/consumer-page.png to refresh the README's picture; "" for none).
Skipped when Chromium, chromedriver or selenium is missing, unless KRAFTWERK_BROWSER_REQUIRED=1.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import consumer_page



def _lab_vault_api_key() -> str:
    """The first producer API key in the lab's vault (Molecule shares inventory/lab/group_vars)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "lab" / "kraftwerk-vault"), str(root / "inventory" / "lab"), "--show"],
                         check=True, capture_output=True, text=True).stdout
    return str(yaml.safe_load(out)["vault_kraftwerk_api_keys"][0])


def _config() -> tuple[str, str, str]:
    url = os.environ.get("KRAFTWERK_EDGE_URL")
    ca = os.environ.get("KRAFTWERK_CA_FILE")
    key = os.environ.get("KRAFTWERK_API_KEY")
    key_file = os.environ.get("KRAFTWERK_API_KEY_FILE")
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if inventory and not url:
        from testinfra.utils.ansible_runner import AnsibleRunner  # noqa: PLC0415

        runner = AnsibleRunner(inventory)
        edge = sorted(runner.get_hosts("nginx"))[0]
        url = f"https://{runner.get_variables(edge)['ansible_host']}"
        inv_dir = Path(inventory).resolve().parent
        ca = ca or str(inv_dir / "pki" / "ca.crt")
        if not (key or key_file):
            key = _lab_vault_api_key()
    if not key and key_file:
        key = Path(key_file).read_text().split()[0]
    if not (url and ca and key):
        pytest.skip("set KRAFTWERK_EDGE_URL, KRAFTWERK_CA_FILE and KRAFTWERK_API_KEY(_FILE), or MOLECULE_INVENTORY_FILE")
    return url, ca, key


def test_consumer_page_shows_new_messages_live() -> None:
    consumer_page.require_browser()
    url, ca, key = _config()
    default = Path(tempfile.gettempdir()) / "kraftwerk-consumer-page.png"
    screenshot = os.environ.get("KRAFTWERK_SCREENSHOT", str(default)) or None
    result = consumer_page.run(url, ca, key, screenshot=screenshot, count=3)
    assert len(result.sent) == 3 and all(isinstance(s["offset"], int) for s in result.sent)
    assert result.seconds_to_show < 30
    assert result.console_errors == [], result.console_errors
