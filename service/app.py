"""App assembly: settings -> runtime -> routers, middleware and error handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from srserve.service import errors
from srserve.service.body_limit import BodyLimitMiddleware, BodyTooLarge
from srserve.service.request_id import RequestIDMiddleware
from srserve.service.routes import health, metrics, models, pages, upscale
from srserve.service.runtime import Runtime
from srserve.service.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background so /healthz answers (and /readyz says 503) meanwhile.
        loading = asyncio.create_task(asyncio.to_thread(runtime.load))
        yield
        await loading
        await asyncio.to_thread(runtime.close)

    app = FastAPI(
        title="srserve",
        version="0.1.0",
        summary="Image super-resolution: resident upsamplers, tiles batched across requests.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    errors.install(app, {"/v1/upscale": upscale.PARAMETERS})

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        runtime.metrics.rejections.labels("upload_too_large").inc()
        body = errors.error_body("upload_too_large", str(exc), allowed={"max_upload_bytes": exc.limit})
        return JSONResponse(body, status_code=413, headers={"Connection": "close"})

    for router in (upscale.router, models.router, health.router, metrics.router, pages.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestIDMiddleware)
    return app
