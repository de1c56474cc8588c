"""Reduced precision per model, chosen by measurement: fp16 or bf16 only where the answer stays fp32's.

On a GPU half precision roughly doubles the tensor-core rate and halves the bytes
moved, but some networks lose detail or overflow (transformers are known for
black or NaN output in fp16). So a model not named in ``SR_PRECISION`` is run at
warm-up on a few photo-like images in fp32 and in each reduced precision, fp16
first (more mantissa), then bf16 (fp32's range); the first whose 8-bit output is
within ``MIN_PSNR_DB`` of fp32's, with nothing non-finite, is kept, else fp32.
On a CPU the service runs fp32 (``predict`` autocasts on CUDA only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

#: Reduced precision is kept only if its 8-bit output has at least this PSNR against fp32's:
#: 50 dB is a mean squared error of about 0.65 levels^2, below what any encoder keeps.
MIN_PSNR_DB = 50.0
CANDIDATES = ("fp16", "bf16")
MAX_PSNR_DB = 100.0  # what equal outputs score (a finite number, for JSON)


def psnr_db(reference: np.ndarray, other: np.ndarray, peak: float = 255.0) -> float:
    """PSNR of ``other`` against ``reference``, capped at ``MAX_PSNR_DB`` (equal); -inf when ``other``
    is not finite."""
    if not np.isfinite(other).all():
        return -math.inf
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return MAX_PSNR_DB if mse == 0 else min(MAX_PSNR_DB, 10 * math.log10(peak**2 / mse))


def choose(
    run: Callable[[str], np.ndarray],
    *,
    candidates: Sequence[str] = CANDIDATES,
    min_psnr_db: float = MIN_PSNR_DB,
) -> tuple[str, dict[str, float]]:
    """The first of ``candidates`` whose ``run(precision)`` output is within ``min_psnr_db`` of
    ``run("fp32")``'s, else ``"fp32"``; with the PSNR of each candidate tried."""
    reference = run("fp32")
    scores: dict[str, float] = {}
    for precision in candidates:
        try:
            scores[precision] = psnr_db(reference, run(precision))
        except RuntimeError:  # the device or a layer does not support it
            scores[precision] = -math.inf
        if scores[precision] >= min_psnr_db:
            return precision, scores
    return "fp32", scores


def probe_images(count: int = 2, side: int = 96, seed: int = 0) -> np.ndarray:
    """``(count, side, side, 3)`` uint8 photo-like images: smooth gradients, edges and fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = 0.5 + 0.35 * np.sin(2 * np.pi * (x[..., None] * 1.5 + y[..., None] * 0.7) + phase)
        edges = (x[..., None] > rng.uniform(0.3, 0.7)) * 0.2
        texture = rng.normal(0, 0.04, (side, side, 3))
        out.append(np.clip(255 * (base + edges + texture - 0.1), 0, 255).astype(np.uint8))
    return np.stack(out)
