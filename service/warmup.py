"""Paying every first-use cost before ``/readyz`` says 200: ready means warm.

A fresh process pays on its first requests for what it has not done yet: Pillow's
format plugins and codec state, each I/O thread's first decode and encode, each
model's first batch through the engine (its route, windows and stitching). A new
replica is added under load, exactly when those first requests must be as fast
as the rest, so :func:`warm` runs small real requests through the same code first.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from srserve.service.engine import Engine
from srserve.service.fast_codecs import Codecs
from srserve.service.imageio import OUTPUT_FORMATS, decode, register_plugins
from srserve.service.output_file import finish
from srserve.service.routing import RequestError, default_scale, resolve

log = logging.getLogger("srserve.warmup")
SIDE = 48  # small: warm-up is about first use, not speed


def samples() -> list[bytes]:
    """One small upload of every input kind the codecs take different paths for."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    images = [
        (Image.fromarray(rgb), "PNG"),
        (Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA"), "PNG"),
        (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),  # 16-bit grey
        (Image.fromarray(rgb), "JPEG"),
        (Image.fromarray(rgb), "WEBP"),
        (Image.fromarray(rgb), "BMP"),
        (Image.fromarray(rgb), "TIFF"),
        (Image.fromarray(rgb), "AVIF"),
        (Image.fromarray(rgb), "HEIF"),
    ]
    register_plugins()  # pillow-heif's writer, for the HEIF sample
    out = []
    for image, fmt in images:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


def warm_codecs(pool: ThreadPoolExecutor, threads: int, png_level: int, codecs: Codecs) -> None:
    """Every I/O thread decodes each sample and encodes it to every output format, as requests will."""
    uploads = samples()
    together = threading.Barrier(threads)  # each thread takes one share: all of them get warmed

    def one() -> None:
        together.wait(timeout=30)
        for data in uploads:
            image = decode(data, max_pixels=SIDE * SIDE, codecs=codecs)
            for fmt in OUTPUT_FORMATS:
                if fmt == "jpeg" and image.alpha is not None:
                    continue
                size = (image.height, image.width)
                finish(image, [image.pixels], size, fmt=fmt, quality=90, png_level=png_level, codecs=codecs).close()

    for future in [pool.submit(one) for _ in range(threads)]:
        future.result()


async def _warm_models(engine: Engine) -> None:
    pool = engine.pool
    pixels = np.random.default_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    for name in pool.names:
        scales = pool.scales(name) or [default_scale(name, pool.catalog)]
        for scale in scales:
            try:
                route = resolve(pool, name, in_size=(SIDE, SIDE), scale=scale)
            except RequestError:
                continue
            for into_image in (True, False):  # both ways the engine stitches output
                job = engine.submit(route, pixels, engine.clock() + 600, into_image=into_image)
                await job.future


def warm(engine: Engine, io_pool: ThreadPoolExecutor, io_threads: int, png_level: int, codecs: Codecs) -> float:
    """Warm the codecs in every I/O thread and every model's path through the running engine; seconds taken."""
    started = time.monotonic()
    warm_codecs(io_pool, io_threads, png_level, codecs)
    asyncio.run(_warm_models(engine))
    seconds = time.monotonic() - started
    log.info("warmed codecs and %d models in %.2f s", len(engine.pool.names), seconds)
    return seconds
