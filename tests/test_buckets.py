"""Shape buckets (service/buckets.py): chosen where the measured cost says batching pays, exact where
padding is, and shared by windows of uploads of different sizes."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from bench.sim_accelerator import H200, Profile, SimulatedAccelerator
from srserve.models import MODELS
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR
from srserve.service import buckets, planner
from srserve.service.engine import Engine
from srserve.service.inference import predict
from srserve.service.metrics import Metrics
from srserve.service.model_pool import ModelEntry, ModelPool
from srserve.service.padding import masked, pads_exactly
from srserve.service.routing import resolve
from srserve.service.windows import place, plan_windows, stack_windows, valid_sizes
from tests.test_planner import CPU, GPU, PRIOR


def test_buckets_where_batching_pays_and_exact_fit_where_it_does_not() -> None:
    sides = buckets.sides_for(GPU, halo=4, max_side=1024)
    assert sides and sides[0] == 32 and sides[-1] < 1024  # small sides; large ones fill the device alone
    assert buckets.sides_for(CPU, halo=4, max_side=1024) == ()  # a batch is no cheaper per pixel
    assert buckets.sides_for(PRIOR, halo=4, max_side=1024) == ()  # nothing measured: nothing assumed


@pytest.mark.parametrize(("cost", "bucketed"), [(GPU, True), (CPU, False)], ids=["gpu", "cpu"])
def test_the_planner_pads_to_buckets_only_under_a_gpu_shaped_cost(cost, bucketed: bool) -> None:
    pool = ModelPool(device=torch.device("cpu"), weights_dir=DEFAULT_WEIGHTS_DIR, enabled=["espcn"], window=1024)
    pool.load()
    entry = pool.learned[("espcn", 2)]
    entry.cost = cost
    entry.buckets = buckets.sides_for(cost, halo=entry.radius, max_side=1024) or (64, 128)  # CPU: offered anyway
    for h, w in [(50, 70), (123, 301), (1080, 1920)]:
        plan = plan_windows(resolve(pool, "espcn", in_size=(h, w), scale=2), h, w, 1024)
        assert plan.bucketed is bucketed, (h, w, plan.describe())
        if bucketed:
            assert plan.window[0] in entry.buckets and plan.window[1] in entry.buckets
            assert plan.overhead <= 1.35
        else:
            assert plan.overhead <= planner.MAX_OVERHEAD


def test_per_size_class_the_computed_pixels_stay_within_a_quarter() -> None:
    sides = buckets.sides_for(GPU, halo=4, max_side=1024)
    rng = np.random.default_rng(0)
    small = [(int(h), int(w)) for h, w in rng.integers(48, 401, (200, 2))]
    for sizes in (small, [(1080, 1920), (768, 1024)]):
        ratios = [bucketed(h, w, sides).overhead for h, w in sizes]
        assert np.mean(ratios) <= 1.25


def test_images_join_the_bucket_that_others_fill() -> None:
    sides = buckets.sides_for(GPU, halo=4, max_side=1024)
    h, w = next((h, w) for h in range(40, 200, 7) for w in range(40, 200, 11) if len(cuts(h, w, sides)) > 1)
    alone = bucketed(h, w, sides)
    other = next(c.window for c in cuts(h, w, sides) if c.window != alone.window)
    joined = bucketed(h, w, sides, queued=lambda window: 5 * (window == other))
    assert joined.window == other and joined.overhead <= buckets.MAX_OVERHEAD
    assert joined.seconds < alone.seconds  # it pays for less than a batch of its own: admission adds this up


def test_an_empty_queue_prices_a_batch_of_its_own_and_a_full_one_per_window() -> None:
    exact = planner.choose(60, 60, halo=4, max_side=1024, cost=GPU)
    alone = buckets.choose(exact, halo=4, sides=(64,), cost=GPU)
    shared = buckets.choose(exact, halo=4, sides=(64,), cost=GPU, queued=lambda window: 3)
    assert alone.bucketed and alone.window == (64, 64)  # as dear as exact fit alone: the bucket, which others can join
    assert alone.seconds == pytest.approx(GPU.batch_curve(64 * 64, 16)[1])
    curve = GPU.batch_curve(64 * 64, 16)
    assert shared.seconds == pytest.approx(curve[4] - curve[3])


def test_a_bucket_that_would_pad_over_a_quarter_does_not_win_a_tie() -> None:
    """33x41 in sides of 8 px steps needs 1.42x the pixels: alone, it runs in a window of its own."""
    plan = bucketed(33, 41, (32, 40, 48))
    assert not plan.bucketed and plan.overhead == 1.0
    assert all(c.pixels <= 1.42 * 33 * 41 for c in cuts(33, 41, (32, 40, 48)))  # the fewest, not 2.8x


def bucketed(h: int, w: int, sides: tuple[int, ...], **kwargs) -> planner.Plan:
    exact = planner.choose(h, w, halo=4, max_side=1024, cost=GPU)
    return buckets.choose(exact, halo=4, sides=sides, cost=GPU, **kwargs)


def cuts(h: int, w: int, sides: tuple[int, ...]) -> tuple[buckets.Cut, ...]:
    return buckets.cuts(h, w, halo=4, sides=sides, cost=GPU)


def _registered() -> list[tuple[str, int]]:
    out = []
    for name in MODELS.names():
        scales = (1,) if MODELS.get(name).task != "upscale" else (2, 3)
        out += [(name, s) for s in scales]
    return out


@pytest.mark.parametrize(("name", "scale"), _registered())
def test_bucketed_windows_stitch_to_the_whole_image_output(name: str, scale: int) -> None:
    """For every registered model: padded windows of three images, batched per bucket, equal each whole
    image's output; a model whose padding is not exact keeps windows that fit (the engine's check)."""
    torch.manual_seed(0)
    model = MODELS.build(name, scale=scale).eval()
    halo = int(getattr(model, "receptive_radius", 0))
    if not pads_exactly(model) or int(getattr(model, "grid", 1)) != 1:
        engine = Engine(ModelPool(torch.device("cpu"), DEFAULT_WEIGHTS_DIR, enabled=[]), Metrics(), **_limits())
        entry = ModelEntry(name, "learned", model, halo, grid=int(getattr(model, "grid", 1)), cost=GPU)
        assert engine._bucket_sides(entry, 1024) == ()
        return
    sides = (32, 40, 48, 64)  # small, so that images are padded and cut
    images = [torch.rand(37, 61, 3), torch.rand(90, 45, 3), torch.rand(50, 130, 3)]
    plans = []
    for im in images:
        h, w = im.shape[:2]
        plans.append(buckets.plan_cut(h, w, halo, buckets.cuts(h, w, halo=halo, sides=sides, cost=GPU)[0]))
    assert any(len(p.tiles) > 1 for p in plans) and any(p.overhead > 1 for p in plans)
    by_bucket: dict[tuple[int, int], list] = {}
    for i, plan in enumerate(plans):
        for tile in plan.tiles:
            by_bucket.setdefault(plan.window, []).append((i, tile))
    outs = [np.full((im.shape[0] * scale, im.shape[1] * scale, 3), np.nan, np.float32) for im in images]
    with torch.inference_mode():
        for window, pieces in by_bucket.items():
            batch = stack_windows([(images[i].numpy(), t) for i, t in pieces], window)
            x = torch.from_numpy(batch).permute(0, 3, 1, 2)
            valid = valid_sizes([t for _, t in pieces], window)
            with masked(model, valid or [window] * len(pieces), window):
                result = model(x).permute(0, 2, 3, 1).numpy()
            for (i, tile), r in zip(pieces, result, strict=True):
                place(outs[i], tile, r, scale)
        for im, out in zip(images, outs, strict=True):
            whole = model(im.permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
            assert not np.isnan(out).any() and np.abs(whole - out).max() <= 1e-4


def _limits() -> dict:
    return {"max_batch_tiles": 16, "max_batch_delay_s": 0.02, "max_queue_tiles": 4096}


def _sim_engine(device: SimulatedAccelerator, window: int = 256, use_buckets: bool = True) -> tuple[Engine, ModelPool]:
    pool = ModelPool(torch.device("cpu"), DEFAULT_WEIGHTS_DIR, enabled=["espcn"], window=window)
    pool.load()
    engine = Engine(pool, Metrics(), runner=device, use_buckets=use_buckets, **_limits())
    engine.warm_up()
    return engine, pool


def test_uploads_of_different_sizes_share_batches_and_answer_exactly() -> None:
    """On the simulated GPU, warm-up chooses buckets; small uploads of three sizes in two buckets fill one
    batch (the smaller bucket's windows padded to the larger), and each answer is its whole image's (the
    real model on the host)."""
    device = SimulatedAccelerator(H200)
    engine, pool = _sim_engine(device)
    device.exact = True  # after warm-up, which need not compute the model's pixels on the host
    entry = pool.learned[("espcn", 2)]
    assert entry.buckets
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 58), (52, 61), (60, 62)] * 4]

    async def scenario() -> list[np.ndarray]:
        jobs = []
        with engine.arriving() as arrived:  # one burst: nothing released before the last is queued
            for i, im in enumerate(images):
                route = resolve(pool, "espcn", in_size=im.shape[:2], scale=2)
                jobs.append(engine.submit(route, im, time.monotonic() + 30, arrived=arrived if i == 11 else None))
        assert {j.plan.window for j in jobs} == {(56, 64), (64, 64)} and all(j.plan.bucketed for j in jobs)
        engine.start()
        return list(await asyncio.gather(*(j.future for j in jobs)))

    results = asyncio.run(scenario())
    engine.stop(5)
    for im, out in zip(images, results, strict=True):
        whole = predict(entry.module, im[None], device=pool.device)[0]
        assert out.shape == whole.shape
        assert np.abs(out.astype(int) - whole).max() <= 1  # float rounding at an 8-bit boundary at most
    batches = engine.metrics.registry.get_sample_value("srserve_batch_tiles_count", {"model": "espcn"})
    assert batches == 1  # twelve uploads of three sizes, one batch
    computed = engine.metrics.registry.get_sample_value("srserve_computed_pixels_total", {"model": "espcn"})
    assert computed == 12 * 64 * 64  # the padding of the merged windows is counted


@pytest.mark.parametrize("use_buckets", [True, False], ids=["buckets", "exact-fit"])
def test_admission_predicts_the_time_of_shared_batches(use_buckets: bool) -> None:
    """A device whose batches cost a fixed 20 ms: a burst of 48 small uploads of many sizes runs in a few
    shared batches with buckets, in about one batch each without, and the wait predicted for the next
    request is that time either way (not a full batch's share of it per window)."""
    fixed = Profile("fixed", 1e18, 1e18, per_batch_s=0.02, link_bytes_s=1e18, full_px=1, source="test")
    engine, pool = _sim_engine(SimulatedAccelerator(fixed), window=128, use_buckets=use_buckets)
    assert pool.learned[("espcn", 2)].queue_priced
    rng = np.random.default_rng(1)
    sizes = [(int(h), int(w)) for h, w in rng.integers(40, 64, (48, 2))]

    async def scenario() -> tuple[float, float]:
        jobs = []
        with engine.arriving() as arrived:
            for i, (h, w) in enumerate(sizes):
                im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                route = resolve(pool, "espcn", in_size=(h, w), scale=2)
                jobs.append(engine.submit(route, im, time.monotonic() + 30, arrived=arrived if i == 47 else None))
        predicted = engine.predicted_wait()
        started = time.monotonic()
        engine.start()
        await asyncio.gather(*(j.future for j in jobs))
        return predicted, time.monotonic() - started

    predicted, took = asyncio.run(scenario())
    engine.stop(5)
    batches = engine.metrics.registry.get_sample_value("srserve_batch_tiles_count", {"model": "espcn"})
    if use_buckets:
        assert batches <= 16  # shared: 48 windows of a few buckets, where exact fit runs about 48 batches
    else:
        assert batches >= 30
    assert 0.4 * took <= predicted <= 2.5 * took, (predicted, took, batches)
