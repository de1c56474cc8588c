"""Windows of one image: planned, cut and stacked into a batch, run, and pasted into its output.

The engine batches windows from many requests through these functions;
:func:`run_route` runs one image through them synchronously (``srserve upscale``,
and the reference in tests), so both stitch the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from srserve.service import blend, buckets, planner
from srserve.service.inference import predict
from srserve.service.model_pool import ModelPool
from srserve.service.planner import Plan
from srserve.service.routing import Route
from srserve.service.tiling import Tile, cut, paste


def plan_windows(
    route: Route,
    height: int,
    width: int,
    max_side: int,
    queued: Callable[[tuple[int, int]], int] | None = None,
) -> Plan:
    """The windows this image is cut into (one untiled piece for whole-image resizes).

    ``queued``: windows of a shape waiting now on this route, which prices a bucketed plan
    against the exact fit (see :func:`srserve.service.buckets.choose`), and the exact fit itself where
    batching pays (``entry.queue_priced``); None: an empty queue.
    """
    entry = route.entry
    if not route.tiled:
        return planner.whole(height, width, entry.cost)
    if route.blend:
        return blend.plan(height, width, math.isqrt(entry.whole_pixels), entry.cost, entry.grid)
    side = entry.max_window(max_side)
    exact = planner.choose(height, width, halo=entry.radius, max_side=side, cost=entry.cost, align=entry.grid)
    if not entry.buckets:
        # Where batching pays (a GPU) a window of a shape of its own pays for a batch, not for a full batch's share.
        return buckets.at_queue(exact, entry.cost, queued or (lambda window: 0)) if entry.queue_priced else exact
    return buckets.choose(
        exact, halo=entry.radius, sides=entry.buckets, cost=entry.cost, queued=queued or (lambda window: 0)
    )


def new_output(route: Route, pixels: np.ndarray, *, as_image: bool = False) -> np.ndarray | Image.Image:
    """The empty output of ``pixels`` along ``route``.

    ``as_image``: a Pillow RGB image (what the encoder reads) instead of an
    array, so a large 8-bit result exists once.
    """
    if as_image:
        if pixels.dtype != np.uint8:
            raise ValueError("only 8-bit output is stitched into an image")
        return Image.new("RGB", route.out_size[::-1])
    return np.empty((*route.out_size, 3), dtype=pixels.dtype)


def stack_windows(
    pieces: Sequence[tuple[np.ndarray, Tile | None]], window: tuple[int, int] | None = None
) -> np.ndarray:
    """One batch from (image pixels, its window; None for the whole image) pairs.

    ``window``: the bucket shape every piece is padded to at its bottom and right, by repeating its
    last row and column (see :mod:`srserve.service.padding`); None: the pieces share one shape.
    """
    cuts = [cut(pixels, tile) if tile is not None else pixels for pixels, tile in pieces]
    if window is None:
        return np.stack(cuts)
    first = cuts[0]
    out = np.empty((len(cuts), *window, first.shape[2]), dtype=first.dtype)
    for slot, piece in zip(out, cuts, strict=True):
        h, w = piece.shape[:2]
        slot[:h, :w] = piece
        slot[:h, w:] = piece[:, -1:]
        slot[h:] = slot[h - 1 : h]
    return out


def valid_sizes(pieces: Sequence[Tile | None], window: tuple[int, int]) -> list[tuple[int, int]] | None:
    """The valid (h, w) of each padded piece of a batch of ``window``; None when none is padded."""
    sizes = [t.shape if t is not None else window for t in pieces]
    return sizes if any(s != window for s in sizes) else None


def place(out: np.ndarray | Image.Image, tile: Tile | None, result: np.ndarray, scale: int) -> None:
    """Paste a window's result (its core, without the halo) into ``out``; None: the whole image."""
    if tile is not None:
        paste(out, tile, result, scale)
    elif isinstance(out, Image.Image):
        out.paste(Image.fromarray(result, "RGB"))
    else:
        out[...] = result


def run_route(pool: ModelPool, route: Route, pixels: np.ndarray, batch_tiles: int = 8) -> np.ndarray:
    """Upscale ``(H, W, 3)`` pixels along ``route`` in this thread, ``batch_tiles`` windows at a time."""
    entry = route.entry
    plan = plan_windows(route, *pixels.shape[:2], pool.window)
    out = np.empty((*route.out_size, 3), dtype=pixels.dtype)
    mixed = blend.Blend(route.out_size, pixels.shape[:2], route.scale) if route.blend else None
    tiles = plan.tiles
    for i in range(0, len(tiles), batch_tiles):  # a plan's windows share one shape
        chunk = tiles[i : i + batch_tiles]
        bucket = plan.window if plan.bucketed else None
        windows = stack_windows([(pixels, t) for t in chunk], bucket)
        size = route.size_for(windows.shape[1:3])
        valid = valid_sizes(chunk, plan.window) if plan.bucketed else None
        results = predict(entry.module, windows, device=pool.device, precision=entry.precision, size=size, valid=valid)
        for tile, result in zip(chunk, results, strict=True):
            if mixed is not None and tile is not None:
                mixed.add(tile, result)
            else:
                place(out, tile, result, route.scale)
    if mixed is not None:
        mixed.finish(out)
    return out
