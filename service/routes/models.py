"""What can be asked for: every model with its scales, size, receptive field, tile and PSNR."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from models import MODELS
from models.resize import ALIGN_CORNERS_MODES, ANTIALIAS_MODES, RESIZE_RADIUS
from service.deps import ApiKeyDep, RuntimeDep
from service.imageio import OUTPUT_FORMATS

router = APIRouter(prefix="/v1", tags=["models"])


class Tile(BaseModel):
    window: int
    halo: int
    core: int


class Variant(BaseModel):
    scale: int
    parameters: int
    receptive_radius: int
    tile: Tile
    precision: str
    psnr: dict[str, float]
    sha256: str


class ModelInfo(BaseModel):
    name: str
    kind: str
    description: str
    scales: list[int] | str
    options: list[str]
    receptive_radius: int | None = None
    tile: Tile | None = None
    variants: list[Variant] = []


class Limits(BaseModel):
    max_upload_bytes: int
    max_input_pixels: int
    max_output_pixels: int
    request_timeout_s: float
    formats: list[str]


class ModelList(BaseModel):
    models: list[ModelInfo]
    device: str
    limits: Limits


def _psnr(card: dict[str, Any]) -> dict[str, float]:
    return {k: float(v["psnr_y"]) for k, v in card.get("metrics", {}).items() if "psnr_y" in v}


@router.get("/models", response_model=ModelList, dependencies=[ApiKeyDep], summary="Models and their scales")
async def list_models(runtime: RuntimeDep) -> ModelList:
    pool, window = runtime.pool, runtime.pool.window
    out = []
    for name in pool.names:
        spec = MODELS.get(name)
        if spec.kind == "resize":
            r = RESIZE_RADIUS[name]
            options = [
                o
                for o, modes in (("align_corners", ALIGN_CORNERS_MODES), ("antialias", ANTIALIAS_MODES))
                if name in modes
            ]
            out.append(
                ModelInfo(
                    name=name,
                    kind="resize",
                    description=spec.description,
                    scales="any factor in (0, 64], or width/height",
                    options=options,
                    receptive_radius=r,
                    tile=Tile(window=window, halo=r, core=window - 2 * r),
                )
            )
            continue
        variants = []
        for scale in pool.scales(name):
            entry = pool.learned[(name, scale)]
            card = entry.card or {}
            variants.append(
                Variant(
                    scale=scale,
                    parameters=int(card.get("parameters", 0)),
                    receptive_radius=entry.radius,
                    tile=Tile(window=window, halo=entry.radius, core=window - 2 * entry.radius),
                    precision=entry.precision,
                    psnr=_psnr(card),
                    sha256=str(card.get("sha256", "")),
                )
            )
        out.append(
            ModelInfo(
                name=name,
                kind="learned",
                description=spec.description,
                scales=pool.scales(name),
                options=[],
                variants=variants,
            )
        )
    s = runtime.settings
    limits = Limits(
        max_upload_bytes=s.max_upload_bytes,
        max_input_pixels=s.max_input_pixels,
        max_output_pixels=s.max_output_pixels,
        request_timeout_s=s.request_timeout_s,
        formats=list(OUTPUT_FORMATS),
    )
    return ModelList(models=out, device=str(runtime.device), limits=limits)
