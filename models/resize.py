"""Parameter-free resizers over ``F.interpolate``.

``align_corners=False`` samples on pixel centres (``src = (dst + 0.5) / s - 0.5``),
which is shift-invariant at integer factors and therefore tileable;
``align_corners=True`` maps corner pixel centres onto each other
(``src = dst * (in - 1) / (out - 1)``), whose grid depends on the whole image size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from srserve.models.layers import bicubic_layout
from srserve.models.registry import MODELS

#: Modes for which F.interpolate accepts ``align_corners``.
ALIGN_CORNERS_MODES = frozenset({"bilinear", "bicubic"})
#: Modes for which F.interpolate accepts ``antialias`` (it matters only when shrinking).
ANTIALIAS_MODES = frozenset({"bilinear", "bicubic"})
#: How many LR pixels each side an output pixel reads at an integer upscale factor.
COPYING_MODES = frozenset({"nearest", "nearest-exact"})
RESIZE_RADIUS = {"nearest": 0, "nearest-exact": 0, "area": 0, "bilinear": 1, "bicubic": 2}


class Interpolate(nn.Module):
    """Resize an NCHW batch with one ``F.interpolate`` mode.

    Args:
        mode: one of ``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic``, ``area``.
        scale: factor applied to height and width when no target size is given.
        align_corners: corner-aligned grid (bilinear/bicubic only); ``None`` means
            the pixel-centre grid.
        antialias: low-pass before shrinking (bilinear/bicubic only); ``None`` turns
            it on exactly when the output is smaller than the input.
    """

    def __init__(
        self,
        *,
        mode: str,
        scale: float = 2.0,
        align_corners: bool | None = None,
        antialias: bool | None = None,
    ) -> None:
        super().__init__()
        if mode not in RESIZE_RADIUS:
            raise ValueError(f"unknown interpolation mode {mode!r}; allowed: {sorted(RESIZE_RADIUS)}")
        if align_corners is not None and mode not in ALIGN_CORNERS_MODES:
            raise ValueError(f"align_corners applies only to {sorted(ALIGN_CORNERS_MODES)}, not {mode!r}")
        if antialias and mode not in ANTIALIAS_MODES:
            raise ValueError(f"antialias applies only to {sorted(ANTIALIAS_MODES)}, not {mode!r}")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.mode = mode
        self.scale = float(scale)
        self.align_corners = align_corners
        self.antialias = antialias

    @property
    def copies_pixels(self) -> bool:
        """Every output value is an input value (nearest): 8-bit pixels can be resized as they are,
        with the same result as the float round trip and none of its cost."""
        return self.mode in COPYING_MODES

    @property
    def receptive_radius(self) -> int:
        """LR radius an output pixel reads at an integer upscale factor."""
        return RESIZE_RADIUS[self.mode]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output size for an input of ``height x width`` at this module's scale."""
        return max(1, math.floor(height * self.scale)), max(1, math.floor(width * self.scale))

    def is_shift_invariant(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
        """Whether tiles can be resized alone and stitched (integer upscale, centre grid)."""
        if self.align_corners:
            return False
        factors = {o / i for i, o in zip(in_size, out_size, strict=True)}
        return len(factors) == 1 and (f := factors.pop()) >= 1 and f == int(f)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        out_size = size if size is not None else self.output_size(*x.shape[-2:])
        shrinking = out_size[0] < x.shape[-2] or out_size[1] < x.shape[-1]
        antialias = self.antialias if self.antialias is not None else shrinking
        kwargs: dict[str, object] = {}
        if self.mode in ALIGN_CORNERS_MODES:
            kwargs["align_corners"] = bool(self.align_corners)
        if self.mode in ANTIALIAS_MODES:
            kwargs["antialias"] = bool(antialias)
        if self.mode == "bicubic":
            x = bicubic_layout(x)
        return F.interpolate(x, size=tuple(out_size), mode=self.mode, **kwargs)


def _register(mode: str, description: str) -> None:
    def builder(**kwargs: object) -> Interpolate:
        return Interpolate(mode=mode, **kwargs)  # type: ignore[arg-type]

    builder.__name__ = f"build_{mode.replace('-', '_')}"
    MODELS.register(mode, kind="resize", description=description)(builder)


_register("nearest", "nearest neighbour (legacy floor grid, as F.interpolate 'nearest')")
_register("nearest-exact", "nearest neighbour on the pixel-centre grid (as PIL)")
_register("bilinear", "bilinear; align_corners optional; antialiased when shrinking")
_register("bicubic", "bicubic (a = -0.75); align_corners optional; antialiased when shrinking")
_register("area", "area averaging (adaptive average pooling; nearest when enlarging)")
