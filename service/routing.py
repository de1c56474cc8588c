"""How a request maps onto the resident models: name, scale or target size -> a :class:`Route`.

``resolve`` turns a request's model/scale/size into the unit of batching: a
model key, the output size, and whether the image may be tiled at all. Every
refusal is a :class:`RequestError` that says what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from srserve.models import MODELS
from srserve.models.registry import Registry
from srserve.models.resize import ALIGN_CORNERS_MODES, ANTIALIAS_MODES
from srserve.service.model_pool import ModelEntry, ModelPool


class RequestError(ValueError):
    """A request parameter is not allowed; the message says what is."""

    def __init__(self, message: str, *, field_name: str, allowed: Any = None) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.allowed = allowed


@dataclass(frozen=True)
class Route:
    """How one request runs: which model, output size, and tiling."""

    entry: ModelEntry
    key: tuple[Any, ...]
    out_size: tuple[int, int]
    tiled: bool
    scale: int  # integer factor when tiled, else 0
    size_arg: tuple[int, int] | None = None  # explicit output size for whole-image resizes
    blend: bool = False  # overlapped windows blended (a network with no exact halo, on an image over its budget)

    def size_for(self, window: tuple[int, int]) -> tuple[int, int] | None:
        """The output size to pass the module for a window of ``window`` LR pixels."""
        if self.entry.kind == "resize" and self.tiled:
            return window[0] * self.scale, window[1] * self.scale
        return self.size_arg


#: The scale of an upscale request that gives neither scale nor width/height.
DEFAULT_SCALE = 2.0


def default_scale(model: str, catalog: Registry = MODELS) -> float:
    """1 for restoration (x1) models, a model's only scale where it has one (a community file), else
    :data:`DEFAULT_SCALE`."""
    if model not in catalog:
        return DEFAULT_SCALE
    spec = catalog.get(model)
    if spec.task != "upscale":
        return 1.0
    return float(spec.scales[0]) if len(spec.scales) == 1 else DEFAULT_SCALE


def check_name(pool: ModelPool, name: str) -> None:
    """RequestError unless ``pool`` serves ``name``."""
    if name not in pool.names:
        raise RequestError(f"unknown model {name!r}", field_name="model", allowed=pool.names)


def resolve(
    pool: ModelPool,
    name: str,
    *,
    in_size: tuple[int, int],
    scale: float | None = None,
    width: int | None = None,
    height: int | None = None,
    align_corners: bool | None = None,
    antialias: bool | None = None,
) -> Route:
    """Map request parameters onto a :class:`Route`, or raise :class:`RequestError`."""
    check_name(pool, name)
    h, w = in_size
    spec = pool.catalog.get(name)
    if spec.kind == "learned":
        if align_corners is not None or antialias is not None:
            raise RequestError(
                "align_corners and antialias apply to resizers only",
                field_name="align_corners",
                allowed=MODELS.names("resize"),
            )
        allowed = pool.scales(name)
        factor = _learned_factor(name, h, w, scale, width, height, allowed)
        entry = pool.learned[(name, factor)]
        if entry.whole:  # no exact halo: the image whole, or (too large for that) in blended windows
            blended = h * w > entry.whole_pixels
            return Route(entry, ("learned", name, factor), (h * factor, w * factor), blended, factor, blend=blended)
        return Route(entry, ("learned", name, factor), (h * factor, w * factor), True, factor)
    if align_corners is not None and name not in ALIGN_CORNERS_MODES:
        raise RequestError(
            f"align_corners applies to {sorted(ALIGN_CORNERS_MODES)} only",
            field_name="align_corners",
            allowed=sorted(ALIGN_CORNERS_MODES),
        )
    if antialias and name not in ANTIALIAS_MODES:
        raise RequestError(
            f"antialias applies to {sorted(ANTIALIAS_MODES)} only",
            field_name="antialias",
            allowed=sorted(ANTIALIAS_MODES),
        )
    out_h, out_w = _resize_size(h, w, scale, width, height)
    entry = pool.resizer(name, align_corners, antialias)
    fy, fx = out_h / h, out_w / w
    integer_up = fy == fx and fy >= 1 and fy == int(fy) and not align_corners
    if integer_up:  # pixel-centre grid at an integer factor: shift-invariant, tileable
        f = int(fy)
        return Route(entry, ("resize", name, align_corners, antialias, f), (out_h, out_w), True, f)
    return Route(entry, ("resize-whole", name, align_corners, antialias), (out_h, out_w), False, 0, (out_h, out_w))


def _learned_factor(
    name: str, h: int, w: int, scale: float | None, width: int | None, height: int | None, allowed: list[int]
) -> int:
    if not allowed:
        raise RequestError(f"model {name!r} has no trained weights loaded", field_name="model")
    if scale is None and width is None and height is None:
        raise RequestError("give scale, or width and/or height", field_name="scale", allowed=allowed)
    if scale is not None:
        if scale not in allowed:
            raise RequestError(f"model {name!r} has no scale {scale:g}", field_name="scale", allowed=allowed)
        factor = int(scale)
    else:
        candidates = {width / w if width else None, height / h if height else None} - {None}
        factor_f = candidates.pop() if len(candidates) == 1 else math.nan
        if factor_f not in allowed:
            raise RequestError(
                f"model {name!r} upscales by {allowed}; width/height must be one of those times the input ({w}x{h})",
                field_name="width",
                allowed=[f"{w * s}x{h * s}" for s in allowed],
            )
        factor = int(factor_f)
    if (width is not None and width != w * factor) or (height is not None and height != h * factor):
        raise RequestError(
            f"width/height must be {w * factor}x{h * factor} at scale {factor}",
            field_name="width",
            allowed=[w * factor, h * factor],
        )
    return factor


def _resize_size(h: int, w: int, scale: float | None, width: int | None, height: int | None) -> tuple[int, int]:
    if width is None and height is None:
        if scale is None:
            raise RequestError("give scale, or width and/or height", field_name="scale")
        if not (0 < scale <= 64 and math.isfinite(scale)):
            raise RequestError(f"scale must be in (0, 64], got {scale}", field_name="scale")
        return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
    if scale is not None:
        raise RequestError("give either scale or width/height, not both", field_name="scale")
    if width is None:  # keep the aspect ratio
        width = max(1, round(w * height / h))  # type: ignore[operator]
    if height is None:
        height = max(1, round(h * width / w))
    return int(height), int(width)
