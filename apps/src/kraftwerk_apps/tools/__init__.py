"""Operator tools run from the apps venv (kraftwerk-topic-backup)."""
