"""ESPCN's sub-pixel shuffle and the transpose-conv decoder's exact output size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srserve.models import MODELS
from srserve.models.deconv import deconv_geometry


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_shape_and_pixel_shuffle(scale: int) -> None:
    model = MODELS.build("espcn", scale=scale)
    assert any(isinstance(m, nn.PixelShuffle) for m in model.modules())
    x = torch.rand(2, 3, 11, 7)
    assert model(x).shape == (2, 3, 11 * scale, 7 * scale)


def test_pixel_shuffle_layout() -> None:
    """(C*r^2, H, W) -> (C, rH, rW): channel c*r^2 + i*r + j lands at (r*y + i, r*x + j)."""
    r, c = 3, 2
    x = torch.arange(c * r * r * 2 * 2, dtype=torch.float32).view(1, c * r * r, 2, 2)
    y = nn.PixelShuffle(r)(x)
    for ch in range(c):
        for i in range(r):
            for j in range(r):
                assert torch.equal(y[0, ch, i::r, j::r], x[0, ch * r * r + i * r + j])


def test_espcn_without_skip_is_pure_subpixel() -> None:
    model = MODELS.build("espcn", scale=2, residual=False)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert torch.count_nonzero(model(torch.rand(1, 3, 5, 5))) == 0


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kernel", [4, 5, 8, 9, 12])
def test_deconv_geometry_formula(scale: int, kernel: int) -> None:
    if kernel < scale:
        pytest.skip("kernel smaller than the scale is rejected")
    padding, output_padding = deconv_geometry(scale, kernel)
    assert 0 <= output_padding < scale
    for h in (1, 2, 7, 16):
        # (H-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1
        assert (h - 1) * scale - 2 * padding + (kernel - 1) + output_padding + 1 == scale * h


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_output_is_exactly_scale_times_input_for_every_size(scale: int) -> None:
    """Every H, W in 1..40 (odd, even, 1 px): the ConvTranspose2d output is s*H x s*W."""
    model = MODELS.build("deconv", scale=scale, features=2, shrink=1, num_maps=1).eval()
    assert isinstance(model.deconv, nn.ConvTranspose2d)
    assert model.deconv.output_padding[0] < scale
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 4800 tiny convolutions: thread start-up would dominate
    try:
        with torch.inference_mode():
            for h in range(1, 41):
                for w in range(1, 41):
                    assert model(torch.zeros(1, 3, h, w)).shape[-2:] == (scale * h, scale * w), (h, w)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_with_hr_features_keeps_the_transpose_conv_and_the_size(scale: int) -> None:
    """The widened decoder: ConvTranspose2d to hr_features channels, then a 3x3 conv at HR to RGB."""
    model = MODELS.build("deconv", scale=scale, features=56, shrink=24, num_maps=4, hr_features=8).eval()
    assert isinstance(model.deconv, nn.ConvTranspose2d) and model.deconv.out_channels == 8
    with torch.inference_mode():
        for h, w in ((1, 1), (7, 12), (16, 5)):
            assert model(torch.zeros(1, 3, h, w)).shape == (1, 3, scale * h, scale * w)
    assert sum(p.numel() for p in model.parameters()) <= 100_000  # the budget


def test_deconv_rejects_kernel_below_scale() -> None:
    with pytest.raises(ValueError, match="at least the scale"):
        MODELS.build("deconv", scale=4, deconv_kernel=3)
