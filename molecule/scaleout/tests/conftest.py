"""The default scenario's fixtures and helpers (molecule/default/tests/conftest.py), for this scenario (like molecule/migration/tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_DEFAULT = Path(__file__).resolve().parents[2] / "default" / "tests"
sys.path.insert(0, str(_DEFAULT))
_spec = importlib.util.spec_from_file_location("kraftwerk_molecule_common", _DEFAULT / "conftest.py")
assert _spec and _spec.loader
_common = importlib.util.module_from_spec(_spec)
sys.modules["kraftwerk_molecule_common"] = _common
_spec.loader.exec_module(_common)

api_key = _common.api_key
tls = _common.tls
