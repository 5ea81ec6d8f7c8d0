"""Per-app objects the routes need, kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from kraftwerk_apps.producer.service import Publisher
from kraftwerk_apps.producer.settings import ProducerSettings


@dataclass(frozen=True, slots=True)
class ProducerContext:
    settings: ProducerSettings
    publisher: Publisher
    api_keys: list[bytes]


def get_context(request: Request) -> ProducerContext:
    context = request.app.state.producer
    if not isinstance(context, ProducerContext):
        raise TypeError("app.state.producer is not set up (use create_app)")
    return context
