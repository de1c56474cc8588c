"""CPU lanes: a batch's windows computed side by side, each on its share of the OpenMP threads,
with the same pixels as one call, and no thread outside the lanes affected."""

from __future__ import annotations

import threading

import numpy as np
import torch

from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.service.batch_runner import BatchRunner
from srserve.service.cpu_lanes import CpuLanes
from srserve.service.inference import predict

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
