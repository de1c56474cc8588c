"""What can be asked for: every model with its scales, size, receptive field, PSNR, and how
images are cut into windows for it (example plans from its measured cost)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from srserve.models.resize import ALIGN_CORNERS_MODES, ANTIALIAS_MODES, RESIZE_RADIUS
from srserve.service.deps import ApiKeyDep, RuntimeDep
from srserve.service.engine import Engine
from srserve.service.errors import error_responses
from srserve.service.imageio import OUTPUT_FORMATS
from srserve.service.routing import Route, resolve

router = APIRouter(prefix="/v1", tags=["models"])


#: LR sizes whose plans /v1/models shows (height, width).
EXAMPLE_SIZES = ((64, 64), (256, 256), (512, 512), (768, 1024), (1080, 1920))


class PlanExample(BaseModel):
    size: str
    windows: str
    computed: float


class Tiling(BaseModel):
    """How images are cut for this model: windows up to ``max_window`` px, ``halo`` px shared at each seam."""

    mode: str = Field(
        "exact",
        description="exact: windows stitch to the whole-image output bit for bit (a community network: its halo "
        "covers its measured reach, and a probe stitched bit for bit; where its CPU kernels round by shape, a rare "
        "pixel may differ by one level); whole: each image runs as one "
        "window (a network with a global reach, measured at load)",
    )
    max_window: int
    halo: int
    grid: int = Field(1, description="windows start on multiples of this many LR px (pooling, attention windows)")
    whole_max_pixels: int | None = Field(
        None, description="whole mode: LR pixels an image runs whole up to; a larger one runs in blended windows"
    )
    blend_psnr_db: float | None = Field(
        None,
        description="whole mode: PSNR of blended 96-px windows (32-px overlap, feathered) against the whole image,"
        " measured at load on a photo-like probe (larger windows, as served, stitch closer); null: identical",
    )
    cost_measured: bool
    buckets: list[int] = Field(
        default_factory=list,
        description="window sides shared across uploads so that they batch, chosen at warm-up where the "
        "measured cost says batching pays and padding is exact for the model; empty: windows fit each image",
    )
    plans: list[PlanExample]


def _finite(db: float | None) -> float | None:
    return round(db, 2) if db is not None and math.isfinite(db) else None


def tiling(engine: Engine, route: Route) -> Tiling:
    plans = []
    for h, w in EXAMPLE_SIZES:
        plan = engine.plan_for(route, h, w)
        rows, cols = plan.rows, plan.cols
        windows = f"{rows}x{cols} {'bucket ' if plan.bucketed else ''}of {plan.window[1]}x{plan.window[0]}"
        plans.append(PlanExample(size=f"{w}x{h}", windows=windows, computed=round(plan.overhead, 4)))
    entry = route.entry
    max_window = entry.max_window(engine.pool.window)
    return Tiling(
        mode="whole" if entry.whole else "exact",
        max_window=max_window,
        halo=entry.radius,
        grid=entry.grid,
        whole_max_pixels=entry.whole_pixels if entry.whole else None,
        blend_psnr_db=_finite(entry.blend_psnr_db),
        cost_measured=entry.cost.measured,
        buckets=list(entry.buckets),
        plans=plans,
    )


class Variant(BaseModel):
    scale: int
    parameters: int
    receptive_radius: int
    tiling: Tiling
    precision: str
    precision_psnr_db: dict[str, float | None] = Field(
        default_factory=dict,
        description="measured at warm-up on CUDA: each reduced precision's 8-bit output against fp32's "
        "(null: not finite); empty where SR_PRECISION set it or on a CPU",
    )
    psnr: dict[str, float]
    sha256: str


class SizeRequirements(BaseModel):
    minimum: int
    multiple_of: int
    square: bool


class Community(BaseModel):
    """Where a model from ``SR_MODELS_DIR`` comes from, as detected and as its sidecar says."""

    file: str
    architecture: str
    architecture_name: str
    purpose: str = Field(description="spandrel's: SR (an upscaler) or Restoration (x1)")
    code_licence: str = Field(description="the licence of the architecture's code (in spandrel)")
    licence: str = Field(description="the weights' licence, from the sidecar (unknown without one)")
    display_name: str | None = None
    size_requirements: SizeRequirements
    supports_half: bool
    supports_bfloat16: bool
    tags: list[str]


class ModelInfo(BaseModel):
    """One model. ``scales``: the trained integer factors of a learned model (empty while
    loading); empty for a resizer, which takes ``any_scale``."""

    name: str
    kind: str
    task: str  # upscale, or the restoration an x1 model does (dejpeg, denoise); usable as restore=
    description: str
    scales: list[int]
    any_scale: bool
    options: list[str]
    receptive_radius: int | None = None
    tiling: Tiling | None = None
    variants: list[Variant] = []
    community: Community | None = None


def community_info(name: str, card: dict[str, Any]) -> Community:
    return Community(
        file=f"{name}.safetensors",
        display_name=card.get("display_name"),
        size_requirements=SizeRequirements(**card["size_requirements"]),
        **{
            k: card[k]
            for k in Community.model_fields
            if k in card and k not in ("size_requirements", "file", "display_name")
        },
    )


class Limits(BaseModel):
    max_upload_bytes: int
    max_input_pixels: int
    max_output_pixels: int
    request_timeout_s: float
    max_queue_wait_s: float
    formats: list[str]


class ModelList(BaseModel):
    status: str  # ready | starting | draining | failed: while starting, learned models have no scales yet
    models: list[ModelInfo]
    device: str
    limits: Limits


def _psnr(card: dict[str, Any]) -> dict[str, float]:
    """PSNR per evaluation set: Y channel for upscalers, RGB at the card's level for restoration."""
    metrics = card.get("metrics", {}).items()
    return {k: float(v.get("psnr_y", v.get("psnr_rgb"))) for k, v in metrics if "psnr_y" in v or "psnr_rgb" in v}


@router.get(
    "/models",
    response_model=ModelList,
    dependencies=[ApiKeyDep],
    summary="Models and their scales",
    responses=error_responses({401: "missing or invalid API key (only when the server has SR_API_KEYS)"}),
)
async def list_models(runtime: RuntimeDep) -> ModelList:
    pool, engine = runtime.pool, runtime.engine
    learned = pool.learned  # one snapshot: loading publishes the whole set at once
    out = []
    community = {m.name: m.card for m in pool.community}
    for name in pool.names:
        spec = pool.catalog.get(name)
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
                    task=spec.task,
                    description=spec.description,
                    scales=[],
                    any_scale=True,
                    options=options,
                    receptive_radius=r,
                    tiling=tiling(engine, resolve(pool, name, in_size=(1, 1), scale=2)),
                )
            )
            continue
        variants = []
        scales = sorted(s for n, s in learned if n == name)
        for scale in scales:
            entry = learned[(name, scale)]
            card = entry.card or {}
            variants.append(
                Variant(
                    scale=scale,
                    parameters=int(card.get("parameters", 0)),
                    receptive_radius=entry.radius,
                    tiling=tiling(engine, resolve(pool, name, in_size=(1, 1), scale=scale)),
                    precision=entry.precision,
                    precision_psnr_db={
                        p: round(db, 2) if math.isfinite(db) else None for p, db in entry.precision_psnr_db.items()
                    },
                    psnr=_psnr(card),
                    sha256=str(card.get("sha256", "")),
                )
            )
        out.append(
            ModelInfo(
                name=name,
                kind="learned",
                task=spec.task,
                description=spec.description,
                scales=scales,
                any_scale=False,
                options=[],
                variants=variants,
                community=community_info(name, community[name]) if name in community else None,
            )
        )
    s = runtime.settings
    limits = Limits(
        max_upload_bytes=s.max_upload_bytes,
        max_input_pixels=s.max_input_pixels,
        max_output_pixels=s.max_output_pixels,
        request_timeout_s=s.request_timeout_s,
        max_queue_wait_s=s.max_queue_wait_s,
        formats=list(OUTPUT_FORMATS),
    )
    return ModelList(status=runtime.phase.value, models=out, device=str(runtime.device), limits=limits)
