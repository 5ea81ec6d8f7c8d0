"""promtool for the tests that check PromQL (the monitoring role's rules, the Grafana dashboard's queries).

lab/fetch-promtool unpacks Debian's prometheus package into ~/.cache/kraftwerk once and prints promtool's path.
Without one the tests skip, or fail under KRAFTWERK_PROMTOOL_REQUIRED=1 (./kw unit) or CI=true.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("KRAFTWERK_PROMTOOL_REQUIRED") == "1" or os.environ.get("CI") == "true"


@functools.cache
def find_promtool() -> tuple[str, str]:
    """(path, '') when lab/fetch-promtool gives a promtool, else ('', why not); looked up once per process."""
    try:
        fetched = subprocess.run([sys.executable, str(ROOT / "lab" / "fetch-promtool"), "--quiet"],
                                 capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", f"lab/fetch-promtool did not run: {exc}"
    path = fetched.stdout.strip()
    if fetched.returncode != 0 or not path:
        return "", f"lab/fetch-promtool found no promtool: {fetched.stderr.strip() or 'no output'}"
    return path, ""


def require_promtool() -> str:
    """promtool's path (looked up once per process); skips the test without one, or fails it when required."""
    path, problem = find_promtool()
    if problem:
        if REQUIRED:
            pytest.fail(f"promtool is required (KRAFTWERK_PROMTOOL_REQUIRED=1 or CI=true): {problem}")
        pytest.skip(f"no promtool: {problem} (run lab/fetch-promtool; KRAFTWERK_PROMTOOL_REQUIRED=1 fails instead)")
    return path
