"""Cutting an LR image into equal windows (core + halo) and stitching the results.

Every window lies inside the image, so where a window touches the image border
the model sees exactly what whole-image inference sees there (same zero padding,
same edge clamping). Each output pixel is taken from the one window whose core
holds it; cores sit at least ``halo`` LR pixels away from any window edge that
is not an image edge. With ``halo >= receptive radius`` the stitched result
equals whole-image inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def spans(length: int, window: int, halo: int) -> list[Span]:
    """Windows of ``min(window, length)`` pixels covering ``[0, length)``, cores disjoint."""
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    if window <= 2 * halo:
        raise ValueError(f"window {window} must exceed twice the halo {halo}")
    if length <= window:
        return [Span(0, length, 0, length)]
    out: list[Span] = []
    covered = 0  # everything before this has a core
    start = 0
    while covered < length:
        start = min(start, length - window)
        valid_start = start + halo if start > 0 else 0
        valid_end = start + window - halo if start + window < length else length
        assert valid_start <= covered < valid_end, (start, covered)
        out.append(Span(start, window, covered, valid_end))
        covered = valid_end
        start += window - 2 * halo
    return out


def plan(height: int, width: int, window: int, halo: int) -> list[Tile]:
    """All tiles of an ``height x width`` image, row-major."""
    return [Tile(r, c) for r in spans(height, window, halo) for c in spans(width, window, halo)]


def cut(pixels: np.ndarray, tile: Tile) -> np.ndarray:
    """The LR window of ``tile`` from ``(H, W, C)`` pixels (a view)."""
    r, c = tile.rows, tile.cols
    return pixels[r.start : r.start + r.length, c.start : c.start + c.length]


def paste(out: np.ndarray, tile: Tile, tile_output: np.ndarray, scale: int) -> None:
    """Copy the core of one window's output (``scale`` x its LR size) into ``out``."""
    r, c = tile.rows, tile.cols
    src = tile_output[
        (r.core_start - r.start) * scale : (r.core_end - r.start) * scale,
        (c.core_start - c.start) * scale : (c.core_end - c.start) * scale,
    ]
    out[r.core_start * scale : r.core_end * scale, c.core_start * scale : c.core_end * scale] = src
