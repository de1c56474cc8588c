"""Conversions between uint8 HWC arrays and float NCHW tensors in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def to_float(batch: torch.Tensor, peak: float) -> torch.Tensor:
    """Contiguous ``(N, H, W, C)`` integer pixels -> ``(N, C, H, W)`` float in [0, 1], channels-last in memory.

    The one conversion used everywhere a model runs (the service, ``srserve upscale``,
    ``sreval``): the CPU kernels round differently for channels-last and contiguous
    tensors, and channels-last results do not depend on the batch size, so the
    service's batched windows give the same bits as one image run alone.
    """
    return batch.permute(0, 3, 1, 2).float().div_(peak)


def from_float(batch: torch.Tensor, peak: float) -> torch.Tensor:
    """``(N, C, H, W)`` float -> ``(N, H, W, C)`` float pixel values, clamped and rounded (half to even)."""
    return batch.clamp(0.0, 1.0).mul_(peak).round_().permute(0, 2, 3, 1)


def to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(H, W, C)`` -> float32 ``(1, C, H, W)`` in [0, 1] (see :func:`to_float`)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) array, got {image.dtype} {image.shape}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.ascontiguousarray(image).copy()
    # unsqueeze, not image[None]: numpy gives the new axis stride 0, and the kernels see strides.
    return to_float(torch.from_numpy(image).unsqueeze(0).to(device), 255.0)


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """float ``(1, C, H, W)`` in [0, 1] -> uint8 ``(H, W, C)``, rounding half to even."""
    return from_float(batch.detach().float(), 255.0)[0].to(torch.uint8).cpu().numpy()


@torch.inference_mode()
def upscale_array(model: nn.Module, image: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Run ``model`` on one uint8 RGB image and return the uint8 result."""
    return to_uint8(model(to_tensor(image, device)))
