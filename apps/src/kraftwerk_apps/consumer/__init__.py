"""Consumer service: at-least-once group processing with DLQ, plus a live page.

See ``history.py`` for how every instance shows the same latest messages.
"""
