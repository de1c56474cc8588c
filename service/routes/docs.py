"""/docs: Swagger UI from the fastapi-swagger package's files, so it renders with no internet.

FastAPI's own /docs loads Swagger UI from a CDN and is blank offline; ReDoc
likewise, so it is off. The page is FastAPI's ``get_swagger_ui_html``; only the
asset URLs point here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

router = APIRouter(tags=["docs"], include_in_schema=False)
ASSETS = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def assets() -> StaticFiles:
    """Swagger UI's bundle, stylesheet and icon, as the package ships them."""
    return StaticFiles(packages=[("fastapi_swagger", "resources")])


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
        oauth2_redirect_url=root + OAUTH2_REDIRECT,
        swagger_ui_parameters={"displayRequestDuration": True, "tryItOutEnabled": True},
    )


@router.get(OAUTH2_REDIRECT, response_class=HTMLResponse)
async def oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()
