"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from srserve.service.deps import RuntimeDep
from srserve.service.runtime import Phase

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process and its worker are alive")
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    broken = runtime.phase is Phase.FAILED or (runtime.phase is Phase.READY and not runtime.engine.alive)
    body = {"status": "failed" if broken else "ok", "phase": runtime.phase.value}
    if runtime.error:
        body["error"] = runtime.error
    return JSONResponse(body, status_code=503 if broken else 200)


@router.get("/readyz", summary="Readiness: models loaded and warm, not draining")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    ready = runtime.phase is Phase.READY and runtime.engine.alive
    body = {
        "status": "ready" if ready else runtime.phase.value,
        "device": str(runtime.device),
        "queued_tiles": runtime.engine.queued_tiles,
    }
    if runtime.error:
        body["error"] = runtime.error
    headers = None if ready else {"Retry-After": str(runtime.settings.retry_after_s)}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)
