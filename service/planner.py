"""How to cut one image: the window grid with the lowest predicted cost.

Per axis, ``n`` evenly spread windows of one length (see :mod:`srserve.service.tiling`);
every combination of a few row and column counts is priced with the model's
:class:`~srserve.service.cost_model.CostModel`, and the cheapest whose computed pixels
stay within ``max_overhead`` of the image's wins. With a flat cost (the prior)
that is the whole image whenever it fits a window; with a measured CPU profile
it is windows near the cache-friendly size; in either case at most 10% of the
pixels are computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from srserve.service.cost_model import CostModel
from srserve.service.tiling import Tile, grid, window_length

#: Computed pixels allowed above the image's own, as a factor.
MAX_OVERHEAD = 1.10
#: Predicted times this close (relative) count as equal; then fewer computed pixels win.
NOISE = 0.10
#: Window counts tried per axis beyond the fewest that fit ``max_side``.
EXTRA_COUNTS = 4
#: Window sides aimed at as well (those the cost model is measured on, and between).
TARGET_SIDES = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


@dataclass(frozen=True)
class Plan:
    """The windows of one image and what they are predicted to cost.

    Args:
        height, width: the LR image.
        rows, cols: windows along each axis; all windows share ``window`` (h, w).
        tiles: row-major; ``(None,)`` for an image that runs whole and untiled.
        seconds: predicted compute time (uncalibrated).
        bucketed: ``window`` is a shared bucket shape (:mod:`srserve.service.buckets`); a tile's spans are
            its valid part, the rest of the window is padding.
    """

    height: int
    width: int
    rows: int
    cols: int
    window: tuple[int, int]
    tiles: tuple[Tile, ...] | tuple[None]
    seconds: float
    bucketed: bool = False

    @property
    def image_pixels(self) -> int:
        return self.height * self.width

    @property
    def computed_pixels(self) -> int:
        return len(self.tiles) * self.window[0] * self.window[1]

    @property
    def overhead(self) -> float:
        return self.computed_pixels / self.image_pixels

    def describe(self) -> str:
        """For the ``X-Tile-Plan`` header: ``2x3 windows of 260x200; computed 1.045x``."""
        h, w = self.window
        kind = "bucket windows" if self.bucketed else "windows"
        return f"{self.rows}x{self.cols} {kind} of {w}x{h}; computed {self.overhead:.3f}x"


def whole(height: int, width: int, cost: CostModel) -> Plan:
    """The image as one untiled piece (resizes that are not shift-invariant)."""
    return Plan(height, width, 1, 1, (height, width), (None,), cost.window_seconds(height * width))


def _axis_options(length: int, halo: int, max_side: int, align: int = 1) -> list[tuple[int, int]]:
    """``(count, window)`` pairs for one axis: the fewest windows that fit ``max_side``, a few more,
    and the counts whose windows come nearest each of ``TARGET_SIDES``."""
    counts: set[int] = set()
    fewest = max(1, -(-(length - 2 * halo) // (max_side - 2 * halo)))  # a lower bound; rounding may add one
    counts.update(range(fewest, fewest + EXTRA_COUNTS + 2))
    for side in TARGET_SIDES:
        if 2 * halo < side < max_side:
            near = round((length - 2 * halo) / (side - 2 * halo))
            counts.update((near - 1, near, near + 1))
    options = []
    for count in sorted(c for c in counts if c >= 1):
        try:
            window = window_length(length, count, halo, align)
        except ValueError:  # more windows than this axis can hold
            break
        if window <= max_side:
            options.append((count, window))
    return options


@lru_cache(maxsize=4096)
def choose(
    height: int,
    width: int,
    *,
    halo: int,
    max_side: int,
    cost: CostModel,
    max_overhead: float = MAX_OVERHEAD,
    align: int = 1,
) -> Plan:
    """The cheapest grid of windows no larger than ``max_side`` for an ``height x width`` image
    (windows starting on multiples of ``align``: see :mod:`srserve.service.tiling`)."""
    if max_side <= 2 * halo:
        raise ValueError(f"window side {max_side} must exceed twice the halo {halo}")
    pixels = height * width
    candidates = []  # (computed pixels, seconds, rows, cols, window h, window w)
    col_options = _axis_options(width, halo, max_side, align)
    for rows, win_h in _axis_options(height, halo, max_side, align):
        for cols, win_w in col_options:
            count = rows * cols
            candidates.append(
                (count * win_h * win_w, count * cost.window_seconds(win_h * win_w), rows, cols, win_h, win_w)
            )
    if not candidates:
        raise ValueError(f"no window of at most {max_side} px covers {height}x{width} with a halo of {halo}")
    within = [c for c in candidates if c[0] <= max_overhead * pixels]
    if not within:  # windows too small for the bound (a tiny max_side): compute as little as possible
        best = min(candidates)
    else:
        # Timings are noisy: among plans within NOISE of the fastest, compute the fewest pixels.
        fastest = min(c[1] for c in within)
        best = min(c for c in within if c[1] <= fastest * (1 + NOISE))
    _, seconds, rows, cols, win_h, win_w = best
    return Plan(height, width, rows, cols, (win_h, win_w), tuple(grid(height, width, rows, cols, halo, align)), seconds)
