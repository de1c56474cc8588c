"""The models resident on one device, and how a request maps onto them.

Learned models are loaded once (every scale that has carded weights); resizers
are parameter-free and built per distinct option set. ``resolve`` turns a
request's model/scale/size into the unit of batching: a model key, the LR
window side, and whether the image may be tiled at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srserve.models import MODELS
from srserve.models.catalog import get_upsampler, learned_scales
from srserve.models.resize import ALIGN_CORNERS_MODES, ANTIALIAS_MODES, Interpolate
from srserve.service.cost_model import CostModel


class RequestError(ValueError):
    """A request parameter is not allowed; the message says what is."""

    def __init__(self, message: str, *, field_name: str, allowed: Any = None) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.allowed = allowed


@dataclass
class ModelEntry:
    """One runnable model instance on the device."""

    name: str
    kind: str
    module: nn.Module
    radius: int
    card: dict[str, Any] | None = None
    precision: str = "fp32"
    cost: CostModel = field(default_factory=CostModel)  # measured at warm-up; the flat prior until then

    @property
    def scale(self) -> float:
        return float(self.module.scale)


@dataclass(frozen=True)
class Route:
    """How one request runs: which model, output size, and tiling."""

    entry: ModelEntry
    key: tuple[Any, ...]
    out_size: tuple[int, int]
    tiled: bool
    scale: int  # integer factor when tiled, else 0
    size_arg: tuple[int, int] | None = None  # explicit output size for whole-image resizes

    def size_for(self, window: tuple[int, int]) -> tuple[int, int] | None:
        """The output size to pass the module for a window of ``window`` LR pixels."""
        if self.entry.kind == "resize" and self.tiled:
            return window[0] * self.scale, window[1] * self.scale
        return self.size_arg


@dataclass
class ModelPool:
    """Models resident on ``device``.

    Args:
        device: where every model lives.
        weights_dir: carded safetensors files of the learned models.
        enabled: registry names to serve (default: every registered model).
        window: the largest LR window side (core + 2 x halo); the planner picks sizes up to it.
        precision: per-model autocast precision on CUDA (``fp32``, ``fp16``, ``bf16``).
    """

    device: torch.device
    weights_dir: Path
    enabled: Iterable[str] | None = None
    window: int = 1024
    precision: dict[str, str] = field(default_factory=dict)
    learned: dict[tuple[str, int], ModelEntry] = field(default_factory=dict, init=False)
    _resizers: dict[tuple[Any, ...], ModelEntry] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        names = list(self.enabled) if self.enabled is not None else MODELS.names()
        for n in names:
            MODELS.get(n)  # fail at start-up on a misspelt name
        self.names = sorted(names)

    def load(self) -> None:
        """Load every enabled learned model at every scale with weights."""
        for name in self.names:
            if MODELS.get(name).kind != "learned":
                continue
            for scale in learned_scales(name, self.weights_dir):
                module, card = get_upsampler(name, scale, weights_dir=self.weights_dir, device=self.device)
                radius = int(module.receptive_radius)
                if self.window <= 2 * radius:
                    raise ValueError(f"tile window {self.window} must exceed twice {name}'s radius {radius}")
                self.learned[(name, scale)] = ModelEntry(
                    name, "learned", module, radius, card, self.precision.get(name, "fp32")
                )

    def check_name(self, name: str) -> None:
        if name not in self.names:
            raise RequestError(f"unknown model {name!r}", field_name="model", allowed=self.names)

    def scales(self, name: str) -> list[int]:
        return sorted(s for n, s in self.learned if n == name)

    def _resizer(self, name: str, align_corners: bool | None, antialias: bool | None) -> ModelEntry:
        key = (name, align_corners, antialias)
        if key not in self._resizers:
            module = Interpolate(mode=name, scale=1.0, align_corners=align_corners, antialias=antialias)
            self._resizers[key] = ModelEntry(name, "resize", module.to(self.device), module.receptive_radius)
        return self._resizers[key]

    def resolve(
        self,
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
        self.check_name(name)
        h, w = in_size
        spec = MODELS.get(name)
        if spec.kind == "learned":
            if align_corners is not None or antialias is not None:
                raise RequestError(
                    "align_corners and antialias apply to resizers only",
                    field_name="align_corners",
                    allowed=MODELS.names("resize"),
                )
            allowed = self.scales(name)
            factor = self._learned_factor(name, h, w, scale, width, height, allowed)
            entry = self.learned[(name, factor)]
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
        out_h, out_w = self._resize_size(h, w, scale, width, height)
        entry = self._resizer(name, align_corners, antialias)
        fy, fx = out_h / h, out_w / w
        integer_up = fy == fx and fy >= 1 and fy == int(fy) and not align_corners
        if integer_up:  # pixel-centre grid at an integer factor: shift-invariant, tileable
            f = int(fy)
            return Route(entry, ("resize", name, align_corners, antialias, f), (out_h, out_w), True, f)
        return Route(entry, ("resize-whole", name, align_corners, antialias), (out_h, out_w), False, 0, (out_h, out_w))

    @staticmethod
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
                    f"model {name!r} upscales by {allowed}; width/height must be one of those times the input "
                    f"({w}x{h})",
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

    @staticmethod
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

    def entries(self) -> list[ModelEntry]:
        return list(self.learned.values())
