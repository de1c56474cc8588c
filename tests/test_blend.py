"""Blended windows: the weights sum to one everywhere, so a local network's blend is its whole-image output."""

from __future__ import annotations

import numpy as np
import pytest

from srserve.service import blend
from srserve.service.cost_model import CostModel
from tests.conftest import smooth_image


def nearest_x2(windows: np.ndarray) -> np.ndarray:
    return windows.repeat(2, axis=1).repeat(2, axis=2)


@pytest.mark.parametrize(("h", "w", "side"), [(150, 230, 96), (97, 64, 70), (300, 120, 128)])
def test_blending_a_local_network_gives_its_whole_output(h: int, w: int, side: int) -> None:
    image = smooth_image(h, w, seed=h)
    plan = blend.plan(h, w, side, CostModel())
    assert len(plan.tiles) > 1 and max(plan.window) <= side
    mixed = blend.Blend((2 * h, 2 * w), (h, w), 2)
    for tile in plan.tiles:
        r, c = tile.rows, tile.cols
        mixed.add(tile, nearest_x2(image[None, r.start : r.start + r.length, c.start : c.start + c.length])[0])
    out = np.zeros((2 * h, 2 * w, 3), np.uint8)
    mixed.finish(out)
    assert np.array_equal(out, nearest_x2(image[None])[0])


def test_windows_overlap_by_the_blend_width() -> None:
    plan = blend.plan(200, 50, 80, CostModel())
    starts = sorted({t.rows.start for t in plan.tiles})
    ends = sorted({t.rows.start + t.rows.length for t in plan.tiles})
    assert all(end - start >= blend.OVERLAP for start, end in zip(starts[1:], ends[:-1], strict=True))


def test_the_error_of_a_global_network_is_measured() -> None:
    """A stand-in whose output shifts with its window's mean: blending is close to, not equal to, whole."""

    def mean_shift(windows: np.ndarray) -> np.ndarray:
        shifted = windows.astype(np.float32) - windows.mean() + 128
        return nearest_x2(np.clip(shifted, 0, 255).astype(np.uint8))

    db = blend.blend_error_db(mean_shift, 2)
    assert 10 < db < 80
    assert blend.blend_error_db(nearest_x2, 2) == float("inf")
