"""CPU lanes: a batch's windows computed side by side, each on its share of the OpenMP threads,
with the same pixels as one call, and no thread outside the lanes affected."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import torch

from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.models.resize import Interpolate
from srserve.service.batch_runner import BatchRunner
from srserve.service.cpu_lanes import CpuLanes
from srserve.service.inference import predict
from tests.test_engine import Doubler, image, make_engine, route_for

CPU = torch.device("cpu")


def fresh_thread_threads() -> int:
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


def test_windows_share_the_threads_and_nothing_else_changes() -> None:
    before, fresh_before = torch.get_num_threads(), fresh_thread_threads()
    lanes = CpuLanes(2, threads=4)
    seen: list[tuple[str, int]] = []

    def run(window: np.ndarray) -> np.ndarray:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return window * 2

    try:
        windows = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
        assert np.array_equal(lanes.map(run, windows), windows * 2)  # in order
        assert {n for _, n in seen} == {2}  # 4 threads over 2 busy lanes
        assert all(name.startswith("srserve-lane") for name, _ in seen)
        seen.clear()
        lanes.map(run, windows[:1])
        assert [n for _, n in seen] == [4]  # one window: every thread
    finally:
        lanes.close()
    assert torch.get_num_threads() == before
    assert fresh_thread_threads() == fresh_before  # torch's process-wide count untouched


def test_a_batch_across_lanes_has_the_pixels_of_one_call() -> None:
    model, _ = get_upsampler("espcn", 2, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")
    windows = np.random.default_rng(0).integers(0, 256, (3, 40, 36, 3), dtype=np.uint8)
    lanes = CpuLanes(2)
    try:
        pending = BatchRunner(CPU, lanes).launch(model, windows)
        assert np.array_equal(pending.wait(), predict(model, windows, device=CPU))
    finally:
        lanes.close()


def test_a_submitted_batch_runs_whole_on_one_lane_on_its_share_of_the_threads() -> None:
    lanes = CpuLanes(2, threads=4)
    seen: list[tuple[str, int]] = []

    def run(windows: np.ndarray) -> np.ndarray:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        time.sleep(0.01)
        return windows + 1

    try:
        windows = np.zeros((3, 2, 2, 3), dtype=np.uint8)
        out, seconds = lanes.submit(run, windows).result()
        assert np.array_equal(out, windows + 1) and seconds >= 0.01
        assert len(seen) == 1 and seen[0][0].startswith("srserve-lane") and seen[0][1] == 2
    finally:
        lanes.close()


def test_under_load_each_window_of_a_batch_takes_its_own_lane() -> None:
    """As warm-up timed a batch (side by side): not one lane computing its windows one after another
    (and not one call whose activations are over glibc's mmap threshold, faulted in at every pass)."""
    model = Recorder(delay=0.05)
    windows = np.stack([image(i, 16, 16) for i in range(3)])
    lanes = CpuLanes(2, threads=2)
    try:
        pending = BatchRunner(CPU, lanes).launch(model, windows, alone=False)
        out = pending.wait()
        assert np.array_equal(out, np.stack([image(i, 32, 32) for i in range(3)]))  # in order
        assert pending.width == 2 and pending.device_s is not None and pending.device_s >= 0.05
        assert model.batches == [1, 1, 1]
        assert all(name.startswith("srserve-lane") and threads == 1 for name, threads, _, _ in model.calls)
        spans = sorted((a, b) for _, _, a, b in model.calls)
        assert spans[1][0] < spans[0][1]  # the first two side by side
    finally:
        lanes.close()


class RecordingResize(Interpolate):
    def __init__(self) -> None:
        super().__init__(mode="bilinear")
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return super().forward(x, size)


def test_under_load_a_resizers_batch_stays_one_call_on_one_lane() -> None:
    """A resize costs less per window than handing windows to lanes one by one."""
    model = RecordingResize()
    windows = np.stack([image(i, 16, 16) for i in range(3)])
    lanes = CpuLanes(2, threads=2)
    try:
        pending = BatchRunner(CPU, lanes).launch(model, windows, alone=False)
        assert np.array_equal(pending.wait(), predict(model, windows, device=CPU))
        assert pending.width == 1 and model.batches == [3, 3]  # one call on a lane, then the reference
    finally:
        lanes.close()


class Recorder(Doubler):
    """Records each call's thread, OpenMP threads and time span."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.calls: list[tuple[str, int, float, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.monotonic()
        out = super().forward(x)
        self.calls.append((threading.current_thread().name, torch.get_num_threads(), start, time.monotonic()))
        return out


def test_under_load_batches_run_side_by_side_one_per_lane_and_a_batch_alone_on_every_thread() -> None:
    model = Recorder(delay=0.05)
    lanes = CpuLanes(2, threads=2)
    engine, route = make_engine(model, max_batch_tiles=1, max_batch_delay_s=0.0, lanes=lanes)
    assert engine.runner.slots == 2

    async def burst() -> list:
        jobs = [engine.submit(route_for(route, image(i)), image(i), time.monotonic() + 10) for i in range(6)]
        engine.start()
        return await asyncio.gather(*(j.future for j in jobs))

    async def one() -> np.ndarray:
        return await engine.submit(route_for(route, image(9)), image(9), time.monotonic() + 10).future

    try:
        results = asyncio.run(burst())
        assert all(np.array_equal(r, image(i, 32, 32)) for i, r in enumerate(results))
        burst_calls = list(model.calls)
        assert len(burst_calls) == 6
        # Each on a lane, on one of the two threads, and some two of them at the same time.
        assert all(name.startswith("srserve-lane") and threads == 1 for name, threads, _, _ in burst_calls)
        spans = sorted((a, b) for _, _, a, b in burst_calls)
        assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
        model.calls.clear()
        assert np.array_equal(asyncio.run(one()), image(9, 32, 32))
        # Alone: at once, in the worker, on every thread.
        [(name, threads, _, _)] = model.calls
        assert name.startswith("srserve-worker") and threads == 2
    finally:
        engine.stop(5)
        lanes.close()
