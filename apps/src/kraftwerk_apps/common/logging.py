"""JSON logging to stdout for the app and for uvicorn."""

from __future__ import annotations

import logging
import sys
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FORMATTER = "pythonjsonlogger.json.JsonFormatter"


class DropColorMessage(logging.Filter):
    """uvicorn adds an ANSI-coloured duplicate of the message; keep the JSON clean."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict; also handed to uvicorn as ``log_config``."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": FORMATTER,
                "fmt": FORMAT,
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            },
        },
        "filters": {"no_color": {"()": DropColorMessage}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["no_color"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["stdout"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": ["stdout"], "level": lvl, "propagate": False},
            "aiokafka": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
            "kraftwerk_apps": {"handlers": ["stdout"], "level": lvl, "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": "WARNING"},
    }


def configure_logging(level: str = "info") -> None:
    import logging.config  # noqa: PLC0415 - keep module import light

    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
