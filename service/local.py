"""Synchronous, in-process upscaling of one image through the same windows the
service plans: used by ``srserve upscale`` and as the reference in tests."""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
from PIL import Image

from service import planner
from service.imageio import Decoded, OutputFormat, encode_into
from service.inference import predict
from service.model_pool import ModelPool, Route
from service.pixels import resize_plane
from service.tiling import cut, paste


def run_route(pool: ModelPool, route: Route, pixels: np.ndarray, batch_tiles: int = 8) -> np.ndarray:
    """Upscale ``(H, W, 3)`` pixels along ``route``; tiles run ``batch_tiles`` at a time."""
    entry = route.entry
    if not route.tiled:
        return predict(entry.module, pixels[None], device=pool.device, size=route.size_arg)[0]
    h, w = pixels.shape[:2]
    s = route.scale
    out = np.empty((h * s, w * s, 3), dtype=pixels.dtype)
    tiles = planner.choose(h, w, halo=entry.radius, max_side=pool.window, cost=entry.cost).tiles
    by_shape: dict[tuple[int, int], list] = {}
    for t in tiles:
        by_shape.setdefault(t.shape, []).append(t)
    for shape, group in by_shape.items():
        for i in range(0, len(group), batch_tiles):
            chunk = group[i : i + batch_tiles]
            windows = np.stack([cut(pixels, t) for t in chunk])
            results = predict(
                entry.module, windows, device=pool.device, precision=entry.precision, size=route.size_for(shape)
            )
            for t, r in zip(chunk, results, strict=True):
                paste(out, t, r, s)
    return out


def encode_result(
    image: Decoded, pixels: np.ndarray, route: Route, *, fmt: OutputFormat, quality: int, png_compress_level: int = 1
) -> bytes:
    """The output file: upscaled pixels, the alpha plane upscaled on its own, the source's ICC profile."""
    out = io.BytesIO()
    encode_result_into(out, image, pixels, route, fmt=fmt, quality=quality, png_compress_level=png_compress_level)
    return out.getvalue()


def encode_result_into(
    out: BinaryIO,
    image: Decoded,
    pixels: np.ndarray | Image.Image,
    route: Route,
    *,
    fmt: OutputFormat,
    quality: int,
    png_compress_level: int = 1,
) -> None:
    """:func:`encode_result`, written to ``out`` (``pixels`` let go early: see ``encode_into``)."""
    alpha = resize_plane(image.alpha, route.out_size) if image.alpha is not None else None
    encode_into(
        out,
        pixels,
        alpha,
        grey=image.grey,
        fmt=fmt,
        quality=quality,
        icc_profile=image.icc_profile,
        png_compress_level=png_compress_level,
    )
