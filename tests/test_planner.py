"""The planner and its cost model: little waste at every size, windows chosen by
measured cost, and stitching that still equals whole-image inference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from srserve.models import MODELS
from srserve.service import planner
from srserve.service.cost_model import CostModel, Sample, measure
from tests.conftest import smooth_image

TABLE = [(64, 64), (150, 200), (256, 256), (400, 300), (512, 512), (768, 1024), (1080, 1920)]


def profile(per_pixel: dict[tuple[int, int], float], max_batch: int = 16) -> CostModel:
    """A cost model from ``(side, batch) -> seconds per pixel``."""
    return CostModel(tuple(Sample(s * s, b, p * s * s * b) for (s, b), p in per_pixel.items()), max_batch)


# Shapes of what warm-up measured here: a CPU (cache-bound above 256 px, batching no help)
# and a GPU (per-pixel cost falls with area and batch).
CPU = profile(
    {(32, 1): 1.4e-6, (64, 1): 8e-7, (128, 1): 7e-7, (256, 1): 7e-7, (512, 1): 1.1e-6, (1024, 1): 1.8e-6}
    | {(64, 4): 7e-7, (128, 4): 7e-7, (256, 4): 1.05e-6}
)
GPU = profile({(64, 1): 2e-8, (256, 1): 2e-9, (1024, 1): 4e-10, (64, 16): 1.5e-9, (256, 16): 4e-10, (1024, 16): 3e-10})
PRIOR = CostModel()


def random_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(48, 2000), rng.randint(48, 2000)) for _ in range(count)]


@pytest.mark.parametrize("cost", [PRIOR, CPU, GPU], ids=["prior", "cpu", "gpu"])
@pytest.mark.parametrize("halo", [6, 8])  # espcn's and deconv's receptive radius
def test_computed_pixels_stay_within_ten_percent(cost: CostModel, halo: int) -> None:
    for h, w in TABLE + random_sizes(300):
        plan = planner.choose(h, w, halo=halo, max_side=1024, cost=cost)
        assert plan.overhead <= planner.MAX_OVERHEAD, (h, w, plan.describe())
        assert plan.computed_pixels == len(plan.tiles) * plan.window[0] * plan.window[1]
        assert max(plan.window) <= 1024


def test_flat_cost_runs_whole_images_that_fit() -> None:
    for h, w in TABLE:
        plan = planner.choose(h, w, halo=6, max_side=1024, cost=PRIOR)
        if max(h, w) <= 1024:
            assert (plan.rows, plan.cols, plan.overhead) == (1, 1, 1.0)
        else:
            assert plan.rows * plan.cols > 1 and plan.overhead < 1.03


def test_measured_cache_cliff_cuts_large_images_into_cheap_windows() -> None:
    big = planner.choose(768, 1024, halo=6, max_side=1024, cost=CPU)
    assert big.rows * big.cols > 1 and big.window[0] * big.window[1] <= 300 * 300  # near the cheap area
    assert big.seconds < planner.choose(768, 1024, halo=6, max_side=1024, cost=PRIOR).rows * CPU.window_seconds(
        768 * 1024
    )
    small = planner.choose(256, 256, halo=6, max_side=1024, cost=CPU)
    assert (small.rows, small.cols) == (1, 1)  # cutting would not pay for the halo


def test_gpu_profile_keeps_large_windows() -> None:
    plan = planner.choose(1080, 1920, halo=6, max_side=1024, cost=GPU)
    assert min(plan.window) >= 500


def test_tiny_max_side_falls_back_to_fewest_pixels() -> None:
    plan = planner.choose(100, 100, halo=8, max_side=32, cost=PRIOR)
    assert max(plan.window) <= 32 and plan.overhead > planner.MAX_OVERHEAD
    assert "windows of" in plan.describe() and f"{plan.overhead:.3f}x" in plan.describe()


def test_cost_model_interpolates_and_never_extrapolates_cheaper() -> None:
    cost = profile({(100, 1): 1e-6, (200, 1): 2e-6})
    assert cost.per_pixel(100 * 100) == pytest.approx(1e-6)
    assert 1e-6 < cost.per_pixel(141 * 141) < 2e-6
    assert cost.window_seconds(50 * 50) == pytest.approx(1e-6 * 100 * 100)  # below the smallest: no cheaper
    assert cost.per_pixel(400 * 400) > 2e-6  # beyond the largest: the trend goes on
    falling = profile({(100, 1): 2e-6, (200, 1): 1e-6})
    assert falling.per_pixel(400 * 400) == pytest.approx(1e-6)  # but never cheaper than measured


def test_best_batch_follows_the_measurements() -> None:
    assert GPU.best_batch(256 * 256) == 16
    assert CPU.best_batch(512 * 512) == 1  # batch 4 is not measured that large: not assumed
    assert CPU.best_batch(256 * 256) == 1  # measured, and slower per pixel
    assert PRIOR.best_batch(256 * 256) >= 1024  # no measurement: the server's own limit applies


def test_measure_times_each_point_and_stops_before_the_budget() -> None:
    calls: list[tuple[int, int]] = []
    now = [0.0]

    def run(side: int, batch: int) -> None:
        calls.append((side, batch))
        now[0] += side * side * batch * 1e-6  # 1 us per pixel

    cost = measure(run, max_side=512, max_batch=8, budget_s=0.1, clock=lambda: now[0])
    measured = {(round(s.area**0.5), s.batch) for s in cost.samples}
    assert (32, 1) in measured and (256, 1) in measured
    assert (512, 1) not in measured  # 512 x 512 would take 0.26 s > budget
    assert (64, 8) in measured and (128, 8) not in measured  # 0.13 s
    assert all(s.per_pixel == pytest.approx(1e-6) for s in cost.samples)
    assert calls[0] == calls[1]  # every point is run once untimed first


def test_measure_outlasts_one_hiccup() -> None:
    """One slow run (another process took the core) neither sets a point's cost nor ends its series."""
    now, slow = [0.0], [(64, 1)]
    seen: dict[tuple[int, int], int] = {}

    def run(side: int, batch: int) -> None:
        seen[side, batch] = seen.get((side, batch), 0) + 1
        hiccup = seen[side, batch] == 2 and (side, batch) in slow  # the first timed run
        now[0] += side * side * batch * 1e-6 * (20 if hiccup else 1)

    cost = measure(run, max_side=512, max_batch=1, budget_s=0.1, clock=lambda: now[0])
    measured = {round(s.area**0.5): s.per_pixel for s in cost.samples}
    assert measured[64] == pytest.approx(1e-6)
    assert 256 in measured


@pytest.mark.parametrize("name", ["espcn", "deconv"])
def test_planned_cuts_stitch_equal_whole_image(name: str) -> None:
    """Whatever grid the measured costs choose, the seams are invisible."""
    torch.manual_seed(0)
    model = MODELS.build(name, scale=2).eval()
    halo = model.receptive_radius
    cheap_small = profile({(32, 1): 1e-6, (64, 1): 1e-6, (96, 1): 3e-6})
    for i, (h, w) in enumerate([(97, 130), (64, 200), (150, 61), (121, 121)]):
        plan = planner.choose(h, w, halo=halo, max_side=96, cost=cheap_small)
        assert len(plan.tiles) > 1
        x = torch.from_numpy(smooth_image(h, w, seed=i)).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            whole = model(x)[0].permute(1, 2, 0).numpy()
            out = np.full_like(whole, np.nan)
            for t in plan.tiles:
                r, c = t.rows, t.cols
                window = x[..., r.start : r.start + r.length, c.start : c.start + c.length]
                result = model(window)[0].permute(1, 2, 0).numpy()
                out[r.core_start * 2 : r.core_end * 2, c.core_start * 2 : c.core_end * 2] = result[
                    (r.core_start - r.start) * 2 : (r.core_end - r.start) * 2,
                    (c.core_start - c.start) * 2 : (c.core_end - c.start) * 2,
                ]
        assert not np.isnan(out).any() and np.abs(whole - out).max() <= 1e-4
