"""FastAPI dependencies: the runtime, settings and API-key check, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from srserve.service.errors import APIError
from srserve.service.runtime import Runtime
from srserve.service.settings import Settings


async def get_runtime(request: Request) -> Runtime:  # async: a sync dependency costs a thread hand-off
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_app_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of SR_API_KEYS")
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <one of SR_API_KEYS>")


async def require_api_key(
    settings: SettingsDep,
    header_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    """401 unless SR_API_KEYS is empty or the request carries one of the keys."""
    if not settings.api_keys:
        return
    key = header_key or (bearer.credentials if bearer else None)
    if key is None:
        raise APIError(
            401,
            "missing_api_key",
            "this server needs an API key: send X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_is_valid(key, settings.api_keys):
        raise APIError(401, "invalid_api_key", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})


def key_is_valid(key: str, keys: list[str]) -> bool:
    return any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


ApiKeyDep = Depends(require_api_key)
