"""The interpolation resizers against direct F.interpolate calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srserve.models import MODELS
from srserve.models.resize import Interpolate

MODES = ["nearest", "nearest-exact", "bilinear", "bicubic", "area"]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [2, 3, 1.5, 0.5])
def test_scale_factor_matches_interpolate(x: torch.Tensor, mode: str, scale: float) -> None:
    model = MODELS.build(mode, scale=scale)
    size = (int(13 * scale), int(17 * scale))
    kwargs = {"align_corners": False, "antialias": scale < 1} if mode in ("bilinear", "bicubic") else {}
    torch.testing.assert_close(model(x), F.interpolate(x, size=size, mode=mode, **kwargs), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(26, 34), (20, 40), (7, 9)])
def test_target_size_and_align_corners(x: torch.Tensor, mode: str, align_corners: bool, size: tuple[int, int]) -> None:
    model = Interpolate(mode=mode, align_corners=align_corners, antialias=False)
    expected = F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
    torch.testing.assert_close(model(x, size), expected, rtol=0, atol=0)


def test_align_corners_grids_differ_and_corners_align(x: torch.Tensor) -> None:
    corner = Interpolate(mode="bilinear", align_corners=True)(x, (25, 33))
    centre = Interpolate(mode="bilinear", align_corners=False)(x, (25, 33))
    assert not torch.allclose(corner, centre)
    # Corner-aligned: the four corner pixels are copied exactly.
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        torch.testing.assert_close(corner[..., i, j], x[..., i, j])


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialias_is_automatic_when_shrinking(x: torch.Tensor, mode: str) -> None:
    auto = Interpolate(mode=mode, scale=0.5)(x)
    expected = F.interpolate(x, size=(6, 8), mode=mode, align_corners=False, antialias=True)
    aliased = F.interpolate(x, size=(6, 8), mode=mode, align_corners=False, antialias=False)
    torch.testing.assert_close(auto, expected, rtol=0, atol=0)
    assert not torch.allclose(auto, aliased)
    forced_off = Interpolate(mode=mode, scale=0.5, antialias=False)(x)
    torch.testing.assert_close(forced_off, aliased, rtol=0, atol=0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_area_downscale_is_average_pooling(k: int) -> None:
    x = torch.rand(1, 3, 8 * k, 5 * k)
    torch.testing.assert_close(Interpolate(mode="area", scale=1 / k)(x), F.avg_pool2d(x, k))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_area_upscale_is_average_unpooling(k: int) -> None:
    """Average unpooling spreads each value over its k x k block: the adjoint of
    average pooling up to k^2, and pooling it back is the identity."""
    y = torch.rand(1, 3, 6, 7)
    up = Interpolate(mode="area", scale=k)(y)
    torch.testing.assert_close(up, y.repeat_interleave(k, -2).repeat_interleave(k, -1))
    torch.testing.assert_close(F.avg_pool2d(up, k), y)
    x = torch.rand(1, 3, 6 * k, 7 * k)
    lhs = (F.avg_pool2d(x, k) * y).sum()
    rhs = (x * up).sum() / (k * k)
    torch.testing.assert_close(lhs, rhs)


def test_invalid_options_fail_with_allowed_values() -> None:
    with pytest.raises(ValueError, match="bicubic"):
        Interpolate(mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="allowed"):
        Interpolate(mode="lanczos")
    with pytest.raises(ValueError, match="antialias"):
        Interpolate(mode="area", antialias=True)
    with pytest.raises(ValueError, match="positive"):
        Interpolate(mode="bilinear", scale=0)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("size", [None, (37, 51), (9, 12)])  # x2, a non-integer enlargement, a shrink
def test_nearest_on_8_bit_pixels_equals_the_float_round_trip(mode: str, size: tuple[int, int] | None) -> None:
    import numpy as np

    from srserve.models.imageops import from_float, to_float
    from srserve.service.inference import predict

    model = Interpolate(mode=mode, scale=2)
    assert model.copies_pixels
    windows = np.random.default_rng(0).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    cpu = torch.device("cpu")
    fast = predict(model, windows, device=cpu, size=size)
    batch = to_float(torch.from_numpy(windows), 255.0)
    with torch.inference_mode():
        ref = from_float(model(batch, size) if size else model(batch), 255.0).to(torch.uint8).numpy()
    assert fast.dtype == np.uint8 and np.array_equal(fast, ref)
    sixteen = predict(model, windows.astype(np.uint16) * 257, device=cpu, size=size)  # the float path
    assert sixteen.dtype == np.uint16 and np.array_equal(sixteen, ref.astype(np.uint16) * 257)


def test_only_nearest_copies_pixels() -> None:
    modes = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
    assert [m for m in modes if Interpolate(mode=m).copies_pixels] == ["nearest", "nearest-exact"]
