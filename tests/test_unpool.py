"""The x1 restoration network: sizes come back exactly, its radius holds at every phase of its pooling
grid, and windows on that grid stitch to whole-image inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srserve.models import MODELS
from srserve.models.unpool import UnpoolRestorer, add_periodic
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
        ({"refine": 1}, True),
        ({"convs": 3}, False),
    ],
)
def test_declared_radius_is_the_measured_one(kwargs: dict, tight: bool) -> None:
    """Never exceeded (what tiling needs), and reached for the shipped shape. Whether the extreme is
    reached depends on where the maxima fall: with three convs a level, a few inputs reach one less."""
    torch.manual_seed(0)  # wide enough that random ReLUs and maxima do not hide the reach
    model = UnpoolRestorer(features=32, max_features=64, **kwargs).double().eval()
    for refine_conv in [*model.head[2::2], *model.up[0][2 * kwargs.get("convs", 2) :: 2]]:
        refine_conv.reset_parameters()  # trained ones are no longer the identity, which reads 1 px
    measured = measured_radius(model)
    assert measured <= model.receptive_radius
    if tight:
        assert measured == model.receptive_radius
    else:
        assert measured >= model.receptive_radius - 1


def told_the_phase(depth: int = 3) -> UnpoolRestorer:
    model = small(depth=depth, block=16)
    with torch.no_grad():
        for p in model.phase:
            p.normal_(0, 0.3)
    return model


SIZES = [(1, 1), (2, 3), (7, 5), (31, 33), (40, 40), (41, 39), (65, 97), (9, 300), (280, 6), (1, 300)]


@pytest.mark.parametrize("kind", ["depth 2", "depth 3", "told the JPEG phase"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_windows_on_the_grid_stitch_to_whole_image(kind: str, size: tuple[int, int]) -> None:
    if kind == "told the JPEG phase":  # a 16-px grid: the service's smallest window
        model = told_the_phase()
        window = -(-4 * model.receptive_radius // model.grid) * model.grid
    else:
        model = small(depth=int(kind[-1]))
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


@pytest.mark.parametrize(("height", "width"), [(1, 1), (16, 16), (17, 33), (40, 5), (5, 40), (64, 48)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_periodic_bias_is_tiled_from_the_first_pixel(height: int, width: int, channels_last: bool) -> None:
    h = torch.rand(2, 4, height, width)
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    bias = torch.rand(4, 16, 16)
    expected = h + bias.repeat(1, 5, 5)[:, :height, :width]
    add_periodic(h, bias)
    assert torch.equal(h, expected)
    assert h.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize(
    ("kwargs", "grid", "radius", "phases"),
    [({"block": 16}, 16, 0, 5), ({"refine": 2}, 8, 4, 0), ({"refine": 2, "block": 16}, 16, 4, 9)],
)
def test_additions_start_out_computing_what_older_weights_did(
    kwargs: dict, grid: int, radius: int, phases: int
) -> None:
    """Phase biases start at zero, refine convs as the identity: --init-from older weights keeps
    their output. The phase widens the grid; each refine conv reads one pixel further."""
    plain, grown = small(), small(**kwargs)
    grown.load_state_dict(plain.state_dict(), strict=False)  # what --init-from does
    assert (grown.grid, grown.receptive_radius - plain.receptive_radius, len(grown.phase)) == (grid, radius, phases)
    assert all(p.shape[-2:] == (16, 16) for p in grown.phase)
    x = torch.rand(1, 3, 37, 29)
    with torch.inference_mode():
        assert torch.equal(plain(x), grown(x))


def test_grids_and_bad_additions() -> None:
    assert (small(depth=2, block=16).grid, small(depth=4, block=8).grid, small(depth=3, block=12).grid) == (16, 16, 24)
    for bad in ({"block": -1}, {"refine": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            UnpoolRestorer(**bad)


def test_the_phase_changes_the_output_by_position() -> None:
    """A shift on the pooling grid but off the block period gives a different result (unlike without)."""
    plain, model = small(), told_the_phase()
    x = torch.from_numpy(smooth_image(48, 120, seed=3)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        for m, differs in [(plain, False), (model, True)]:
            interior = (m(x)[..., 8:][..., 40:80] - m(x[..., 8:])[..., 40:80]).abs().max()
            assert (interior > 1e-4) == differs


def test_the_phase_leaves_the_radius_as_declared() -> None:
    """The biases do not depend on the input, so they add no reach; they move ReLUs and maxima,
    so, as with three convs a level, the extreme may be missed by one."""
    torch.manual_seed(0)
    model = UnpoolRestorer(features=32, max_features=64, block=16).double().eval()
    with torch.no_grad():
        for p in model.phase:
            p.normal_(0, 0.1)
    assert model.receptive_radius - 1 <= measured_radius(model) <= model.receptive_radius
