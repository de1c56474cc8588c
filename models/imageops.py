"""Conversions between uint8 HWC arrays and float NCHW tensors in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(H, W, C)`` -> float32 ``(1, C, H, W)`` in [0, 1]."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) array, got {image.dtype} {image.shape}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.ascontiguousarray(image).copy()
    t = torch.from_numpy(image).to(device)
    return t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """float ``(1, C, H, W)`` in [0, 1] -> uint8 ``(H, W, C)``, rounding half to even."""
    t = batch.detach().squeeze(0).clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return t.permute(1, 2, 0).cpu().numpy()


@torch.inference_mode()
def upscale_array(model: nn.Module, image: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Run ``model`` on one uint8 RGB image and return the uint8 result."""
    return to_uint8(model(to_tensor(image, device)))
