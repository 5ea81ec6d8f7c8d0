# kraftwerk's default strategy (ansible.cfg): Ansible's linear strategy, run through Mitogen when the
# `mitogen` package is installed (requirements-dev.txt pins it). Mitogen keeps one Python interpreter per
# host for the whole run instead of starting one per task, which makes an idempotent site.yml re-run
# about twice as fast. Without Mitogen, or with ANSIBLE_STRATEGY=linear, plain linear is used.
"""Linear strategy, through Mitogen when it is installed."""

from __future__ import annotations

DOCUMENTATION = """
name: kraftwerk_linear
short_description: Ansible's linear strategy, through Mitogen when it is installed
description:
  - The same task order and host batching as C(ansible.builtin.linear).
  - When the C(mitogen) package is importable, tasks run over Mitogen's persistent interpreters.
author: kraftwerk
"""

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:  # Mitogen is optional: plain linear.
    from ansible.plugins.strategy.linear import StrategyModule  # noqa: F401
else:
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[misc,valid-type]
        """Linear, with Mitogen's connection and module runner."""
