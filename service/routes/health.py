"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from srserve.service.deps import RuntimeDep
from srserve.service.runtime import Phase

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str  # ok | failed
    phase: str
    error: str | None = None


class Readiness(BaseModel):
    status: str  # ready | starting | draining | failed
    device: str
    queued_tiles: int
    error: str | None = None


@router.get(
    "/healthz",
    summary="Liveness: the process and its worker are alive",
    response_model=Liveness,
    responses={503: {"model": Liveness, "description": "start-up failed or the worker died"}},
)
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    broken = runtime.phase is Phase.FAILED or (runtime.phase is Phase.READY and not runtime.engine.alive)
    body = Liveness(status="failed" if broken else "ok", phase=runtime.phase.value, error=runtime.error)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503 if broken else 200)


@router.get(
    "/readyz",
    summary="Readiness: models loaded and warm, not draining",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "starting, draining or failed; see Retry-After"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    ready = runtime.phase is Phase.READY and runtime.engine.alive
    body = Readiness(
        status="ready" if ready else runtime.phase.value,
        device=str(runtime.device),
        queued_tiles=runtime.engine.queued_tiles,
        error=runtime.error,
    )
    headers = None if ready else {"Retry-After": str(runtime.settings.retry_after_s)}
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if ready else 503, headers=headers)
