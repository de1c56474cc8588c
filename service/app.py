"""App assembly: settings -> runtime -> routers, middleware and error handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from srserve.service import errors
from srserve.service.access import AccessMiddleware
from srserve.service.batch_runner import Runner
from srserve.service.body_limit import BodyLimitMiddleware, BodyTooLarge
from srserve.service.openapi import truthful_openapi
from srserve.service.routes import docs, health, metrics, models, pages, upscale
from srserve.service.runtime import Runtime
from srserve.service.settings import Settings, get_settings
from srserve.service.shedding import AdmissionGate


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> FastAPI:
    """``runner``: batches run by it instead of the device (``bench/simserve.py``'s simulated accelerator)."""
    settings = settings or get_settings()
    runtime = Runtime(settings, runner)

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
        docs_url=None,  # served by routes.docs from local files: the CDN pages are blank offline
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.runtime = runtime
    errors.install(app, {"/v1/upscale": upscale.PARAMETERS})
    truthful_openapi(app, keys_required=bool(settings.api_keys))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return errors.too_large(exc.limit)

    for router in (upscale.router, models.router, health.router, metrics.router, pages.router, docs.router):
        app.include_router(router)
    app.mount(docs.ASSETS, docs.assets(), name="docs-assets")
    app.mount(pages.STATIC, pages.static_files(), name="static")
    app.add_middleware(AdmissionGate, runtime=runtime)  # inside the body limit: a 413 is still a 413
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    # Added last, so outermost: it sees (and counts) every response, the 413s and 500s included.
    app.add_middleware(
        AccessMiddleware,
        metrics=runtime.metrics,
        served=lambda: runtime.pool.names,
        paths=lambda: app.openapi()["paths"],
    )
    return app
