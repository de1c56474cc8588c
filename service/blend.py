"""Overlapped windows with a feathered blend, for networks whose reach is global (measured at load) on
images too large to run whole within ``SR_WHOLE_MAX_PIXELS``.

No halo makes such a network's windows stitch exactly (every output pixel reads the whole image), so
windows overlap by :data:`OVERLAP` LR px and each output pixel is the weighted mean of the windows
covering it, each window's weight ramping linearly from near 0 at an edge inside the image to 1
:data:`OVERLAP` px in (chaiNNer and ComfyUI blend so too). At the image's own edges there is no ramp.
What that costs against the whole image is measured at load (:func:`blend_error_db`) and listed in
``/v1/models``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from srserve.service import planner
from srserve.service.cost_model import CostModel
from srserve.service.planner import Plan
from srserve.service.tiling import Span, Tile

#: LR px two neighbouring windows share (ComfyUI: 32 on 512-px tiles).
OVERLAP = 32


def _ramp(span: Span, length: int, scale: int) -> np.ndarray:
    """One axis's output weights over a window: a linear ramp over the overlap at inner edges."""
    n = span.length * scale
    pos = np.arange(n, dtype=np.float32) + 0.5
    ramp = OVERLAP * scale
    w = np.ones(n, dtype=np.float32)
    if span.start > 0:
        w = np.minimum(w, pos / ramp)
    if span.start + span.length < length:
        w = np.minimum(w, (n - pos) / ramp)
    return np.clip(w, 1.0 / ramp, 1.0)


class Blend:
    """The running weighted sum of one image's windows; ``finish`` writes the rounded mean into the output."""

    def __init__(self, size: tuple[int, int], lr_size: tuple[int, int], scale: int) -> None:
        self.acc = np.zeros((*size, 3), dtype=np.float32)
        self.weight = np.zeros((*size, 1), dtype=np.float32)
        self.lr_size, self.scale = lr_size, scale

    def add(self, tile: Tile, result: np.ndarray) -> None:
        r, c, s = tile.rows, tile.cols, self.scale
        w = _ramp(r, self.lr_size[0], s)[:, None, None] * _ramp(c, self.lr_size[1], s)[None, :, None]
        rows = slice(r.start * s, (r.start + r.length) * s)
        cols = slice(c.start * s, (c.start + c.length) * s)
        self.acc[rows, cols] += w * result
        self.weight[rows, cols] += w

    def finish(self, out: np.ndarray | Image.Image) -> None:
        values = np.round(self.acc / self.weight)  # half to even, as the model path rounds
        if isinstance(out, Image.Image):
            out.paste(Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), out.mode))
        else:
            out[...] = np.clip(values, 0, np.iinfo(out.dtype).max).astype(out.dtype)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def plan(height: int, width: int, max_side: int, cost: CostModel, align: int = 1) -> Plan:
    """Windows of at most ``max_side`` overlapping by at least :data:`OVERLAP` (the planner's, with half of it
    as the halo), on ``align``'s grid."""
    return planner.choose(height, width, halo=OVERLAP // 2, max_side=max_side, cost=cost, align=align)


def probe_image(h: int = 160, w: int = 224, seed: int = 0) -> np.ndarray:
    """Photo-like uint8 RGB: smooth structure and grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 90 * np.sin(x / 9.0 + y / 13.0)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


#: Window side of the load-time measurement: small, so the probes are cut several times (a bound on the
#: error of the larger windows served).
PROBE_SIDE = 96
#: Probe images (h, w) of the measurement: the worst of them is reported.
PROBES = ((160, 224), (136, 200), (200, 152))
#: Window grids tried: 1, and the attention windows networks commonly have (a window that starts on one
#: keeps a network's attention windows where the whole image has them).
GRIDS = (1, 8, 16)


def blend_error_db(run: Callable[[np.ndarray], np.ndarray], scale: int, align: int = 1) -> float:
    """The worst PSNR, over :data:`PROBES`, of a photo-like image in blended windows of :data:`PROBE_SIDE`
    on ``align``'s grid against the whole image (both through ``run``: uint8 ``(N, h, w, 3)`` -> uint8)."""
    worst = math.inf
    for k, (h, w) in enumerate(PROBES):
        image = probe_image(h, w, seed=k)
        whole = run(image[None])[0]
        mixed = Blend((h * scale, w * scale), (h, w), scale)
        for tile in plan(h, w, PROBE_SIDE, CostModel(), align).tiles:
            assert tile is not None
            r, c = tile.rows, tile.cols
            mixed.add(tile, run(image[None, r.start : r.start + r.length, c.start : c.start + c.length])[0])
        out = np.empty_like(whole)
        mixed.finish(out)
        worst = min(worst, psnr_db(out, whole))
    return worst


def best_grid(run: Callable[[np.ndarray], np.ndarray], scale: int) -> tuple[int, float]:
    """The grid of :data:`GRIDS` whose blended windows come closest to the whole image, and that error."""
    errors = {g: blend_error_db(run, scale, g) for g in GRIDS}
    grid = max(errors, key=lambda g: (errors[g], -g))
    return grid, errors[grid]
