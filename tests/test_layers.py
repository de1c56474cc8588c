"""The bicubic layout choice changes speed only: the same bits as the channels-last input gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srserve.models.imageops import to_float
from srserve.models.layers import bicubic_layout, bicubic_skip


def _pixels(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return to_float(torch.from_numpy(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)), 255.0)


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 31, 77), (2, 200, 13)])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_skip_equals_channels_last(shape: tuple[int, int, int], scale: int) -> None:
    x = _pixels(*shape, seed=scale)
    assert x.is_contiguous(memory_format=torch.channels_last)  # as the service hands pixels to a model
    want = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert torch.equal(bicubic_skip(x, scale), want)


@pytest.mark.parametrize(
    ("size", "align_corners", "antialias"),
    [((90, 154), False, False), ((90, 154), True, False), ((20, 31), False, True), ((20, 31), True, True)],
)
def test_bicubic_resize_equals_channels_last(size: tuple[int, int], align_corners: bool, antialias: bool) -> None:
    x = _pixels(2, 45, 77, seed=1)
    kwargs = {"size": size, "mode": "bicubic", "align_corners": align_corners, "antialias": antialias}
    assert torch.equal(F.interpolate(bicubic_layout(x), **kwargs), F.interpolate(x, **kwargs))
