"""An OpenAPI document whose every ``$ref`` resolves.

The routes read their bodies themselves (size limit while streaming, own error codes), so
FastAPI does not see the request models; ``ProducerAPI`` adds their schemas to
``components.schemas`` where the hand-written request bodies point.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from kraftwerk_apps.producer.schemas import BatchRequest

REF_TEMPLATE = "#/components/schemas/{model}"
EXTRA_MODELS: tuple[type[BaseModel], ...] = (BatchRequest,)


def add_component_schemas(document: dict[str, Any], *models: type[BaseModel]) -> None:
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
        found = {model.__name__: schema, **schema.pop("$defs", {})}
        for name, definition in found.items():
            if name in schemas and schemas[name] != definition:
                raise RuntimeError(f"OpenAPI component {name} defined twice, differently")
            schemas[name] = definition


class ProducerAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            add_component_schemas(document, *EXTRA_MODELS)
        return super().openapi()
