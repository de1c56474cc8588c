"""Stitched windows equal whole-image inference: odd sizes, around the window
size, 1x1, very wide and very tall, with the planner's grids and forced ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srserve.models import MODELS
from srserve.service import planner
from srserve.service.cost_model import CostModel
from srserve.service.inference import predict
from srserve.service.model_pool import ModelPool
from srserve.service.routing import resolve
from srserve.service.tiling import grid, paste, spans, window_length
from srserve.service.windows import run_route
from tests.conftest import WEIGHTS, smooth_image

WINDOW = 32
SIZES = [(1, 1), (5, 7), (31, 33), (32, 32), (33, 31), (33, 3), (67, 45), (9, 300), (280, 6)]


def plan(h: int, w: int, window: int, radius: int) -> list:
    return list(planner.choose(h, w, halo=radius, max_side=window, cost=CostModel()).tiles)


def whole_and_stitched(
    model: torch.nn.Module, x: torch.Tensor, radius: int, scale: int, tiles: list | None = None
) -> tuple[np.ndarray, ...]:
    h, w = x.shape[-2:]
    with torch.inference_mode():
        whole = model(x)[0].permute(1, 2, 0).numpy()
        out = np.full_like(whole, np.nan)
        for t in tiles if tiles is not None else plan(h, w, WINDOW, radius):
            r, c = t.rows, t.cols
            window = x[..., r.start : r.start + r.length, c.start : c.start + c.length]
            paste(out, t, model(window)[0].permute(1, 2, 0).numpy(), scale)
    return whole, out


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["espcn", "deconv"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_learned_stitch_equals_whole_in_float(name: str, scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(scale)
    model = MODELS.build(name, scale=scale).eval()
    x = torch.from_numpy(smooth_image(*size, seed=1)).permute(2, 0, 1)[None].float() / 255
    whole, stitched = whole_and_stitched(model, x, model.receptive_radius, scale)
    assert not np.isnan(stitched).any()
    assert np.abs(whole - stitched).max() <= 1e-4


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("scale", [2, 3])
def test_resizer_stitch_equals_whole(mode: str, scale: int) -> None:
    model = MODELS.build(mode, scale=scale)
    x = torch.from_numpy(smooth_image(45, 70, seed=2)).permute(2, 0, 1)[None].float() / 255
    whole, stitched = whole_and_stitched(model, x, model.receptive_radius, scale)
    assert np.abs(whole - stitched).max() <= 1e-5


def test_too_small_radius_would_be_caught() -> None:
    """The equality test can fail: a halo below the receptive radius breaks it."""
    torch.manual_seed(0)
    model = MODELS.build("espcn", scale=2).eval()
    x = torch.from_numpy(smooth_image(70, 70, seed=3)).permute(2, 0, 1)[None].float() / 255
    whole, stitched = whole_and_stitched(model, x, model.receptive_radius - 2, 2)
    assert np.abs(whole - stitched).max() > 1e-3


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", ["espcn", "deconv"])
@pytest.mark.parametrize(("size", "rows", "cols"), [((70, 90), 2, 3), ((41, 200), 1, 5), ((123, 37), 4, 1)])
def test_forced_grids_stitch_equal_whole(name: str, scale: int, size: tuple[int, int], rows: int, cols: int) -> None:
    """Grids the planner would not pick here: every seam still matches whole-image inference."""
    torch.manual_seed(scale)
    model = MODELS.build(name, scale=scale).eval()
    x = torch.from_numpy(smooth_image(*size, seed=6)).permute(2, 0, 1)[None].float() / 255
    tiles = grid(*size, rows, cols, model.receptive_radius)
    assert len(tiles) == rows * cols
    whole, stitched = whole_and_stitched(model, x, model.receptive_radius, scale, tiles)
    assert not np.isnan(stitched).any()
    assert np.abs(whole - stitched).max() <= 1e-4


@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 64, 65, 100, 1000])
@pytest.mark.parametrize("halo", [0, 3, 7])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 40])
def test_spans_cover_once_with_margin(length: int, halo: int, count: int) -> None:
    try:
        window = window_length(length, count, halo)
    except ValueError:
        assert count > 1 and length < count + 2 * halo * (count - 1)  # only when the axis is too short
        return
    covered = np.zeros(length, dtype=int)
    found = spans(length, count, halo)
    assert len(found) == count
    for s in found:
        assert s.length == window and s.start >= 0 and s.start + s.length <= length
        covered[s.core_start : s.core_end] += 1
        if s.start > 0:
            assert s.core_start - s.start >= halo
        if s.start + s.length < length:
            assert s.start + s.length - s.core_end >= halo
    assert (covered == 1).all()
    # Overlap is what the halos need, and a pixel of rounding per seam.
    assert count * window <= length + (2 * halo + 1) * (count - 1) + count


def test_window_must_exceed_twice_the_halo() -> None:
    with pytest.raises(ValueError, match="twice the halo"):
        planner.choose(100, 100, halo=5, max_side=10, cost=CostModel())


def _pool() -> ModelPool:
    pool = ModelPool(
        device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=["espcn", "bicubic", "bilinear"], window=WINDOW
    )
    pool.load()
    return pool


@pytest.mark.parametrize("size", [(1, 1), (31, 33), (70, 20), (5, 130)])
def test_uint8_service_path_matches_whole_image(size: tuple[int, int]) -> None:
    """After rounding to uint8 the stitched image is identical but for rare ties."""
    pool = _pool()
    image = smooth_image(*size, seed=4)
    for scale in pool.scales("espcn"):
        route = resolve(pool, "espcn", in_size=size, scale=scale)
        assert route.tiled
        stitched = run_route(pool, route, image, batch_tiles=3)
        whole = predict(route.entry.module, image[None], device=pool.device)[0]
        differ = stitched != whole
        assert differ.mean() < 1e-3 and np.abs(stitched.astype(int) - whole).max() <= 1


def test_routes_tile_only_shift_invariant_resizes() -> None:
    pool = _pool()
    assert resolve(pool, "bicubic", in_size=(10, 10), scale=3).tiled
    assert resolve(pool, "bicubic", in_size=(10, 10), width=40, height=40).tiled
    assert not resolve(pool, "bicubic", in_size=(10, 10), scale=1.5).tiled
    assert not resolve(pool, "bicubic", in_size=(10, 10), scale=0.5).tiled  # antialiased shrink
    assert not resolve(pool, "bilinear", in_size=(10, 10), scale=2, align_corners=True).tiled
    assert not resolve(pool, "bicubic", in_size=(10, 12), width=30, height=20).tiled
    route = resolve(pool, "bicubic", in_size=(10, 12), width=30)
    assert route.out_size == (25, 30)


@pytest.mark.parametrize(
    ("kwargs", "size"), [({"scale": 1.5}, (15, 18)), ({"scale": 0.5}, (5, 6)), ({"width": 7, "height": 9}, (9, 7))]
)
def test_whole_image_resizes_match_interpolate(kwargs: dict, size: tuple[int, int]) -> None:
    pool = _pool()
    image = smooth_image(10, 12, seed=5)
    route = resolve(pool, "bicubic", in_size=(10, 12), **kwargs)
    out = run_route(pool, route, image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    shrink = size[0] < 10
    ref = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)
    ref = (ref.clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy().astype(np.uint8)
    assert out.shape == (*size, 3) and np.array_equal(out, ref)
