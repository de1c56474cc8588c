"""Cutting an LR image into windows (core + halo) and stitching the results.

Every window lies inside the image, so where a window touches the image border
the model sees exactly what whole-image inference sees there (same zero padding,
same edge clamping). Each output pixel is taken from the one window whose core
holds it; cores sit at least ``halo`` LR pixels away from any window edge that
is not an image edge. With ``halo >= receptive radius`` the stitched result
equals whole-image inference.

Along one axis an image is cut into ``n`` windows of one length, spread evenly
from the first pixel to the last: the only pixels computed twice are the
overlaps that the halos need (``2 * halo`` per seam, plus rounding), so a cut
into few windows costs barely more than the image itself.

A network that pools (``models/unpool.py``) is shift-equivariant only by
multiples of its grid (``2 ** depth``, or 16 when told JPEG's block phase): with ``align`` every window starts on
that grid, counted from the image's first pixel, so it pools exactly as the
whole image does; the last window ends at the image's end, so its length is
the image's length modulo the grid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Span:
    """One window along one axis: ``[start, start+length)``, core ``[core_start, core_end)``."""

    start: int
    length: int
    core_start: int
    core_end: int


@dataclass(frozen=True)
class Tile:
    """A window of the LR image and the core of it whose output is kept."""

    rows: Span
    cols: Span

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.length, self.cols.length


def _starts(length: int, count: int, window: int, align: int = 1) -> list[int]:
    if count == 1:
        return [0]
    steps = (length - window) // align  # a whole number of grid steps: see window_length
    return [align * (i * steps // (count - 1)) for i in range(count)]


def window_length(length: int, count: int, halo: int, align: int = 1) -> int:
    """The shortest window with which ``count`` evenly spread windows cover ``length`` with ``halo``,
    starting on multiples of ``align``."""
    if length < 1 or count < 1 or align < 1:
        raise ValueError(f"length, count and align must be positive, got {length}, {count}, {align}")
    if count == 1:
        return length
    window = max(2 * halo + 1, -(-(length + 2 * halo * (count - 1)) // count))
    window += (length - window) % align  # the last window, ending at the image's end, starts on the grid
    while window <= length:
        starts = _starts(length, count, window, align)
        if all(a + window - b >= 2 * halo for a, b in itertools.pairwise(starts)):
            return window
        window += align  # rounding of the starts left one overlap short
    raise ValueError(f"{count} windows cannot cover {length} px with a halo of {halo}")


def spans(length: int, count: int, halo: int, window: int | None = None, align: int = 1) -> list[Span]:
    """``count`` windows of ``window`` px (default: the shortest that works), cores disjoint, covering ``length``;
    every window starts on a multiple of ``align``."""
    window = window_length(length, count, halo, align) if window is None else window
    if count == 1:
        if window != length:
            raise ValueError("a single window is the whole axis")
        return [Span(0, length, 0, length)]
    if (length - window) % align:
        raise ValueError(f"windows of {window} px cannot start on a {align}-px grid and end at {length}")
    starts = _starts(length, count, window, align)
    cuts = [0]
    for a, b in itertools.pairwise(starts):
        overlap = a + window - b
        if overlap < 2 * halo:
            raise ValueError(f"windows of {window} px overlap by {overlap} < 2 x halo {halo}")
        cuts.append(b + overlap // 2)  # at least halo from both window edges
    cuts.append(length)
    return [Span(s, window, lo, hi) for s, lo, hi in zip(starts, cuts, cuts[1:], strict=False)]


def grid(height: int, width: int, rows: int, cols: int, halo: int, align: int = 1) -> list[Tile]:
    """``rows x cols`` windows of one shape covering an ``height x width`` image, row-major."""
    return [Tile(r, c) for r in spans(height, rows, halo, align=align) for c in spans(width, cols, halo, align=align)]


def cut(pixels: np.ndarray, tile: Tile) -> np.ndarray:
    """The LR window of ``tile`` from ``(H, W, C)`` pixels (a view)."""
    r, c = tile.rows, tile.cols
    return pixels[r.start : r.start + r.length, c.start : c.start + c.length]


def paste(out: np.ndarray | Image.Image, tile: Tile, tile_output: np.ndarray, scale: int) -> None:
    """Copy the core of one window's output (``scale`` x its LR size) into ``out``.

    ``out`` may be a Pillow RGB image, so that an 8-bit result is stitched
    straight into what the encoder reads (no second full-size copy).
    """
    r, c = tile.rows, tile.cols
    src = tile_output[
        (r.core_start - r.start) * scale : (r.core_end - r.start) * scale,
        (c.core_start - c.start) * scale : (c.core_end - c.start) * scale,
    ]
    if isinstance(out, Image.Image):
        out.paste(Image.fromarray(np.ascontiguousarray(src), out.mode), (c.core_start * scale, r.core_start * scale))
    else:
        out[r.core_start * scale : r.core_end * scale, c.core_start * scale : c.core_end * scale] = src
