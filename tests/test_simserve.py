"""The simulated accelerator (bench/sim_accelerator.py) and the real server on it (bench/simserve.py).

It stands in for a GPU that no session has had: each batch costs the profile's
time, none of the host's CPU, and batches queue on it as on one CUDA stream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from bench.load import Target, closed_loop, images_for, png_bytes
from bench.sim_accelerator import H200, SimulatedAccelerator
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.service.cost_model import measure
from srserve.service.inference import predict
from tests.server import metric_value, running_server


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def espcn() -> nn.Module:
    return get_upsampler("espcn", 2, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")[0]


def test_batches_cost_the_profile_time_and_queue_on_the_device(espcn: nn.Module) -> None:
    t = FakeTime()
    device = SimulatedAccelerator(H200, clock=t.clock, sleep=t.sleep)
    windows = np.zeros((4, 64, 48, 3), np.uint8)
    first, second = device.launch(espcn, windows), device.launch(espcn, windows[:1])
    assert first.wait().shape == (4, 128, 96, 3) and t.now == pytest.approx(100 + first.device_s)
    assert second.wait().shape == (1, 128, 96, 3)
    assert t.now == pytest.approx(100 + first.device_s + second.device_s)  # behind the first, as on one stream
    assert device.busy_s == pytest.approx(first.device_s + second.device_s)
    # GPU-shaped: the fixed cost dominates a small window, so four in one batch cost little more than one.
    assert first.device_s < 1.5 * second.device_s
    assert second.device_s > H200.per_batch_s


def test_the_flops_are_the_models_own(espcn: nn.Module) -> None:
    device = SimulatedAccelerator(H200)
    convs = [m for m in espcn.modules() if isinstance(m, nn.Conv2d)]
    macs_per_px = sum(c.weight.numel() for c in convs)  # every convolution of ESPCN runs at LR resolution
    windows = np.zeros((1, 300, 300, 3), np.uint8)  # above the pixels that fill the device

    def compute(windows: np.ndarray) -> float:
        seconds = device.seconds(espcn, windows, 0, precision="fp32")
        return seconds - H200.per_batch_s - windows.nbytes / H200.link_bytes_s

    assert compute(windows) * H200.fp32_flops / 300**2 == pytest.approx(2 * macs_per_px, rel=0.05)
    assert device.seconds(espcn, windows, 0, precision="fp16") < device.seconds(espcn, windows, 0, precision="fp32")
    # A batch too small to fill the device computes as slowly as one that just fills it.
    small = np.zeros((2, 32, 32, 3), np.uint8)
    assert compute(small) * H200.fp32_flops / H200.full_px == pytest.approx(2 * macs_per_px, rel=0.05)


def test_exact_mode_gives_the_models_pixels(espcn: nn.Module) -> None:
    windows = np.random.default_rng(0).integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    out = SimulatedAccelerator(H200, exact=True).launch(espcn, windows).wait()
    assert np.array_equal(out, predict(espcn, windows, device=SimulatedAccelerator().device))


def test_under_its_cost_the_cost_model_batches(espcn: nn.Module) -> None:
    """The planner's cost model, measured on this device as at warm-up, says what a GPU's would: batch."""
    device = SimulatedAccelerator(H200)

    def run(side: int, batch: int) -> float | None:
        pending = device.launch(espcn, np.zeros((batch, side, side, 3), np.uint8))
        pending.wait()
        return pending.device_s  # as the engine's warm-up does for a device that overlaps the host

    cost = measure(run, max_side=128, max_batch=16)
    assert cost.best_batch(64 * 64) == 16
    assert cost.per_pixel(64 * 64, 16) < 0.5 * cost.per_pixel(64 * 64, 1)


def test_the_real_server_runs_on_it(tmp_path: Path) -> None:
    bodies = [png_bytes(im) for im in images_for([(96, 128)], 24)]
    env = {"SR_MODELS": "espcn", "SR_MAX_QUEUE_WAIT_S": "60", "SR_TILE_SIZE": "128"}  # a short warm-up
    with running_server(tmp_path, env, module="bench.simserve", args=("--profile", "h200")) as s:
        target = Target("srserve", s.url, "/v1/upscale", {"model": "espcn", "scale": 2})
        result = asyncio.run(closed_loop(target, bodies, 12))
        assert set(result.statuses) == {200}
        metrics = s.metrics()
        busy = metric_value(metrics, "srserve_device_busy_seconds_total")
        assert 0 < busy < result.seconds  # simulated device time, not wall time
        batches = metric_value(metrics, "srserve_batch_tiles_count")
        assert metric_value(metrics, "srserve_batch_tiles_sum") / batches > 1  # requests shared batches
