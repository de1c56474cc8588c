"""The OpenAPI document as this server really behaves."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def truthful_openapi(app: FastAPI, *, keys_required: bool) -> None:
    """Replace ``app.openapi``: without SR_API_KEYS no operation needs a key, so none declares security."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's own, cached on the app; adjusted once
            if not keys_required:
                for operations in schema.get("paths", {}).values():
                    for operation in operations.values():
                        operation.pop("security", None)
                schema.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
