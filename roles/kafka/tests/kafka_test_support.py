"""Shared by the kafka role's tests: loading a module by path, and the mark of the tests that start a JVM."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

# ./kw installs a JRE (openjdk-17-jre-headless), so there these never skip.
needs_java = pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("KRAFTWERK_TEST_JAVA"),
                                reason="needs a JRE (java on PATH or KRAFTWERK_TEST_JAVA)")


def load_module(name: str, path: Path) -> Any:
    """The Python file at ``path`` (a module of the role, a test helper) imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
