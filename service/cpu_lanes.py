"""Batches on a CPU: side by side, each on its own share of the cores.

One window on all cores (torch's intra-op threads) scales poorly for these small
convolutional networks: measured here, ESPCN x2 on a 256x256 window ran at 1.45x
its one-thread speed on two threads, while two windows on one thread each ran at
1.15-1.33x the two-thread speed. So a batch of ``n`` windows runs as ``min(n, lanes)``
windows at once, each limited to ``threads // lanes_in_use`` OpenMP threads; a
batch of one keeps every thread. The cost model measures batches through this at
warm-up, so whether batching pays on a CPU is still its decision.

Under load the engine goes further: windows run side by side, one per lane on its
share of the threads (:meth:`CpuLanes.submit`, each window of a batch on its own),
and the next starts on whichever lane is free. One batch on every thread waits, at each of its OpenMP
barriers, for the slowest thread, so a decode or encode taking one core for 3 ms
stalls both; a lane stalled by it delays only its own batch. A batch run alone
(nothing else queued) still takes every thread, so a lone request is as fast as before.

The limit is set per lane thread with ``threadpoolctl`` (``omp_set_num_threads``
acts on the calling thread only), never with ``torch.set_num_threads``, which
would also change what every thread started later gets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from srserve.service.priority import lower_this_thread


class CpuLanes:
    """``lanes`` threads sharing ``threads`` OpenMP threads (default: torch's intra-op count)."""

    def __init__(self, lanes: int, *, threads: int | None = None, nice: int = 0) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        self.lanes = lanes
        self.threads = threads or torch.get_num_threads()
        self._openmp = ThreadpoolController().select(user_api="openmp").lib_controllers
        self._set = threading.local()  # each lane thread's current OpenMP count
        self._pool = ThreadPoolExecutor(
            lanes, thread_name_prefix="srserve-lane", initializer=self._enter, initargs=(nice,)
        )

    @staticmethod
    def _enter(nice: int) -> None:
        lower_this_thread(nice)
        torch.get_num_threads()  # torch sets this thread's OpenMP count once, lazily: before ours, not after

    def _limit(self, threads: int) -> None:
        """This thread's OpenMP count, set only when it changes: ``ThreadpoolController.limit`` first
        queries every library (0.7% of the server's samples at 256x256 when done per batch)."""
        if getattr(self._set, "threads", None) != threads:
            for lib in self._openmp:
                lib.set_num_threads(threads)
            self._set.threads = threads

    def _limited(self, threads: int, run: Callable[[np.ndarray], np.ndarray], window: np.ndarray) -> np.ndarray:
        self._limit(threads)
        return run(window)

    def map(self, run: Callable[[np.ndarray], np.ndarray], windows: np.ndarray) -> np.ndarray:
        """``run`` on each window (a ``(1, h, w, c)`` slice) across the lanes; the results stacked in order."""
        busy = min(len(windows), self.lanes)
        threads = max(1, self.threads // busy)
        parts = self._pool.map(lambda i: self._limited(threads, run, windows[i : i + 1]), range(len(windows)))
        return np.concatenate(list(parts))

    def submit(self, run: Callable[[np.ndarray], np.ndarray], windows: np.ndarray) -> Future:
        """``run(windows)`` on the next free lane, on that lane's share of the threads; the future gives
        ``(result, seconds it computed)`` (queued behind the busy lanes, first come first served)."""

        def timed() -> tuple[np.ndarray, float]:
            self._limit(max(1, self.threads // self.lanes))
            start = time.perf_counter()
            out = run(windows)
            return out, time.perf_counter() - start

        return self._pool.submit(timed)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
