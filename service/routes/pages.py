"""The upload page at / and its script and stylesheet under /static (no build step, no CDN)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

router = APIRouter(tags=["pages"])
STATIC = "/static"


def static_files() -> StaticFiles:
    """The page's modules and stylesheet, from the installed package."""
    return StaticFiles(packages=[("srserve.service", "static")])


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(files("srserve.service").joinpath("static/index.html").read_text(encoding="utf-8"))
