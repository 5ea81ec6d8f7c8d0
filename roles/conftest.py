"""Makes the project's module_utils importable as Ansible would (ansible.module_utils.<name>) for the unit tests,
which load the modules' files directly (Ansible finds them through `module_utils = plugins/module_utils`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_UTILS = Path(__file__).resolve().parent.parent / "plugins" / "module_utils"

for _path in sorted(_UTILS.glob("*.py")):
    _name = "ansible.module_utils." + _path.stem
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, _path)
        assert _spec is not None and _spec.loader is not None
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)
