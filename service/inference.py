"""The predict step: a batch of equal-shape pixel windows through one model."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from srserve.models.imageops import from_float, to_float
from srserve.service.padding import masked
from srserve.service.pixels import max_value

AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def predict(
    model: nn.Module,
    windows: np.ndarray,
    *,
    device: torch.device,
    precision: str = "fp32",
    size: tuple[int, int] | None = None,
    valid: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Upscale ``(N, h, w, 3)`` uint8/uint16 windows; returns ``(N, H, W, 3)`` of the same dtype.

    ``valid``: each window's unpadded (h, w) from its top-left, for windows padded to a shared
    bucket (:mod:`srserve.service.padding`); their outputs there equal the unpadded ones'.

    Integer pixels travel to the device (through pinned memory on CUDA) and are
    converted there, which moves a quarter of the bytes float32 would.
    ``size`` is passed to resizers that take a target size.
    """
    out_dtype, peak = windows.dtype, max_value(windows.dtype)
    if windows.dtype == np.uint8 and getattr(model, "copies_pixels", False):
        return _copy_resize(model, windows, device=device, size=size)
    if windows.dtype == np.uint16:  # few device kernels take uint16; int32 holds it exactly
        windows = windows.astype(np.int32)
    elif not windows.flags.writeable or not windows.flags.c_contiguous:
        windows = np.ascontiguousarray(windows).copy()
    host = torch.from_numpy(windows)
    if device.type == "cuda":
        host = host.pin_memory()
    batch = to_float(host.to(device, non_blocking=True), peak)
    dtype = AUTOCAST_DTYPES[precision] if device.type == "cuda" else None
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast, run_masked(model, valid, windows.shape[1:3]):
        out = model(batch, size) if size is not None else model(batch)
    values = from_float(out.float(), peak).to(torch.uint8 if peak == 255 else torch.int32)
    return values.cpu().numpy().astype(out_dtype, copy=False)


def run_masked(
    model: nn.Module, valid: Sequence[tuple[int, int]] | None, window: tuple[int, int]
) -> contextlib.AbstractContextManager:
    """:func:`~srserve.service.padding.masked` for padded windows; nothing for unpadded ones."""
    return masked(model, valid, tuple(window)) if valid is not None else contextlib.nullcontext()


def _copy_resize(
    model: nn.Module, windows: np.ndarray, *, device: torch.device, size: tuple[int, int] | None
) -> np.ndarray:
    """Nearest on the uint8 pixels themselves: the same values as the float path, a fraction of its work
    (on a GPU, what stays on the host is all a request costs)."""
    host = torch.from_numpy(np.ascontiguousarray(windows))
    if device.type == "cuda":
        host = host.pin_memory()
    batch = host.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NCHW view, channels-last in memory
    with torch.inference_mode():
        out = model(batch, size) if size is not None else model(batch)
    return out.permute(0, 2, 3, 1).cpu().numpy()
