"""The x1 restoration network: sizes come back exactly, its radius holds at every phase of its pooling
grid, and windows on that grid stitch to whole-image inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srserve.models import MODELS
from srserve.models.unpool import UnpoolRestorer
from srserve.service import planner
from srserve.service.cost_model import CostModel
from srserve.service.tiling import paste
from tests.conftest import smooth_image


def small(**kwargs: object) -> UnpoolRestorer:
    torch.manual_seed(0)
    return UnpoolRestorer(features=8, max_features=16, **kwargs).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["dejpeg", "denoise"])
def test_registered_as_x1_learned_models(name: str) -> None:
    spec = MODELS.get(name)
    assert spec.kind == "learned" and spec.scales == (1,)
    model = MODELS.build(name)
    assert isinstance(model, UnpoolRestorer) and model.scale == 1
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    with pytest.raises(ValueError, match="scale"):
        MODELS.build(name, scale=2)


def test_every_size_comes_back_exactly() -> None:
    model = small(depth=3)
    with torch.inference_mode():
        for h in range(1, 41):
            for w in range(1, 41):
                assert model(torch.rand(1, 3, h, w)).shape == (1, 3, h, w)
        for h, w in [(65, 97), (1, 300), (300, 1), (129, 2)]:
            assert model(torch.rand(1, 3, h, w)).shape == (1, 3, h, w)


def test_the_default_network_keeps_odd_sizes() -> None:
    with torch.inference_mode():
        assert MODELS.build("dejpeg").eval()(torch.rand(1, 3, 65, 97)).shape == (1, 3, 65, 97)


def test_it_predicts_a_correction() -> None:
    model = small()
    for p in model.tail.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 3, 20, 24)
    assert torch.equal(model(x), x)


def measured_radius(model: UnpoolRestorer, seeds: int = 3) -> int:
    """Largest distance between a perturbed pixel and an output it changed, over every phase of the
    pooling grid and a few inputs (which maxima are picked depends on the data)."""
    size = 2 * (model.receptive_radius + model.grid) + 9  # room for more reach than declared
    worst = 0
    for seed in range(seeds):
        torch.manual_seed(seed)
        x = torch.rand(1, 3, size, size, dtype=torch.float64)
        with torch.no_grad():
            base = model(x)
            for k in range(model.grid):
                c = size // 2 - model.grid // 2 + k
                y = x.clone()
                y[..., c, c] += 0.5
                diff = (model(y) - base).abs().amax(dim=1)[0]
                rows, cols = torch.nonzero(diff > 1e-12, as_tuple=True)
                worst = max(worst, int(torch.stack([rows - c, cols - c]).abs().max()))
    return worst


@pytest.mark.parametrize(
    ("kwargs", "tight"),
    [
        ({}, True),
        ({"depth": 2, "convs": 1}, True),
        ({"depth": 4, "convs": 1}, True),
        ({"transpose": False}, True),
        ({"convs": 3}, False),
    ],
)
def test_declared_radius_is_the_measured_one(kwargs: dict, tight: bool) -> None:
    """Never exceeded (what tiling needs), and reached for the shipped shape. Whether the extreme is
    reached depends on where the maxima fall: with three convs a level, a few inputs reach one less."""
    torch.manual_seed(0)  # wide enough that random ReLUs and maxima do not hide the reach
    model = UnpoolRestorer(features=32, max_features=64, **kwargs).double().eval()
    measured = measured_radius(model)
    assert measured <= model.receptive_radius
    if tight:
        assert measured == model.receptive_radius
    else:
        assert measured >= model.receptive_radius - 1


SIZES = [(1, 1), (2, 3), (7, 5), (31, 33), (40, 40), (41, 39), (65, 97), (9, 300), (280, 6), (1, 300)]


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_windows_on_the_grid_stitch_to_whole_image(depth: int, size: tuple[int, int]) -> None:
    model = small(depth=depth)
    window = 2 * model.receptive_radius + 24  # small windows: many seams
    x = torch.from_numpy(smooth_image(*size, seed=3)).permute(2, 0, 1)[None].float() / 255
    plan = planner.choose(*size, halo=model.receptive_radius, max_side=window, cost=CostModel(), align=model.grid)
    with torch.inference_mode():
        whole = model(x)[0].permute(1, 2, 0).numpy()
        out = np.full_like(whole, np.nan)
        for t in plan.tiles:
            assert t.rows.start % model.grid == 0 and t.cols.start % model.grid == 0
            r, c = t.rows, t.cols
            piece = model(x[..., r.start : r.start + r.length, c.start : c.start + c.length])
            paste(out, t, piece[0].permute(1, 2, 0).numpy(), 1)
    assert not np.isnan(out).any()
    assert np.abs(whole - out).max() <= 1e-5
    if max(size) > window:
        assert len(plan.tiles) > 1


def test_unaligned_windows_would_not_stitch() -> None:
    """The grid matters: the same cut shifted off it changes the result (so the test above can fail)."""
    model = small(depth=3)
    x = torch.from_numpy(smooth_image(40, 120, seed=3)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = model(x)
        shifted = model(x[..., :, 3:])  # starts 3 px off the 8-px grid
    interior = (whole[..., 3:][..., 40:80] - shifted[..., 40:80]).abs().max()
    assert interior > 1e-4
