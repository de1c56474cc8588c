"""Pixel value ranges, and the alpha plane's own resize (the model conversions are in models.imageops)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def max_value(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upscale an alpha plane on its own (bicubic, antialiased when shrinking)."""
    peak = max_value(plane.dtype)
    t = torch.from_numpy(plane.astype(np.float32))[None, None] / peak
    shrinking = size[0] < plane.shape[0] or size[1] < plane.shape[1]
    out = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    return (out.clamp(0, 1) * peak).round()[0, 0].numpy().astype(plane.dtype)
