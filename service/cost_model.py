"""What a window costs on this device, measured at warm-up.

The planner and the admission check both need "how long will these windows
take". The answer differs by device: on a CPU the cost per pixel grows once a
window's activations leave the cache, and batching buys little or loses; on a
GPU small windows are cheap only in large batches. So each model is timed at
warm-up on a few square windows and batch sizes, and the cost of any other
window is interpolated from those samples.

Without samples (warm-up off) the prior is a flat cost per pixel: fewer
computed pixels always win, and batches fill to the configured maximum.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

#: Seconds per LR pixel and per window assumed before anything is measured (a 2-core CPU running ESPCN).
PRIOR_SECONDS_PER_PIXEL = 1e-6
PRIOR_SECONDS_PER_WINDOW = 1e-3


@dataclass(frozen=True)
class Sample:
    """One timing: ``batch`` windows of ``area`` LR pixels took ``seconds``."""

    area: int
    batch: int
    seconds: float

    @property
    def per_pixel(self) -> float:
        return self.seconds / (self.area * self.batch)


@dataclass(frozen=True, eq=False)  # hashed by identity: the planners' caches key on it for every request
class CostModel:
    """Predicted seconds for windows of a given area at a given batch size.

    Args:
        samples: measured timings; empty for the prior.
        max_batch: the largest batch the server forms (the prior imposes no limit of its own).
    """

    samples: tuple[Sample, ...] = ()
    max_batch: int = 1 << 16

    @property
    def measured(self) -> bool:
        return bool(self.samples)

    @cached_property
    def _curves(self) -> dict[int, tuple[list[int], list[float]]]:
        """Per measured batch size: areas ascending and their seconds per pixel."""
        curves: dict[int, tuple[list[int], list[float]]] = {}
        for s in sorted(self.samples, key=lambda s: (s.batch, s.area)):
            areas, costs = curves.setdefault(s.batch, ([], []))
            areas.append(s.area)
            costs.append(s.per_pixel)
        return curves

    def per_pixel(self, area: int, batch: int = 1) -> float:
        """Seconds per LR pixel for windows of ``area`` pixels run ``batch`` at a time."""
        batches = [b for b in self._curves if b <= batch]
        if not batches:
            return PRIOR_SECONDS_PER_PIXEL + PRIOR_SECONDS_PER_WINDOW / max(1, area)
        areas, costs = self._curves[max(batches)]  # the largest measured batch not above ``batch``
        i = bisect.bisect_left(areas, area)
        if i == 0:  # below the smallest sample, fixed costs dominate: no window is cheaper than it
            return costs[0] * areas[0] / max(1, area)
        if len(areas) == 1:
            return costs[-1]
        if i < len(areas):  # linear in log(area) between neighbours
            t = math.log(area / areas[i - 1]) / math.log(areas[i] / areas[i - 1])
            return costs[i - 1] + t * (costs[i] - costs[i - 1])
        # Beyond the largest sample: continue its trend, never cheaper.
        slope = max(0.0, math.log(costs[-1] / costs[-2]) / math.log(areas[-1] / areas[-2]))
        return costs[-1] * (area / areas[-1]) ** slope

    def best_batch(self, area: int) -> int:
        """The batch size with the lowest cost per pixel for this window area, among those measured."""
        if not self.measured:
            return self.max_batch
        # Only batch sizes measured at this area or larger: nothing is assumed about bigger batches.
        options = [b for b, (areas, _) in self._curves.items() if b <= self.max_batch and areas[-1] >= area]
        return min(sorted({1, *options}), key=lambda b: self.per_pixel(area, b))

    @cached_property
    def _window_seconds(self) -> dict[int, float]:
        return {}

    def window_seconds(self, area: int) -> float:
        """Predicted seconds for one window of ``area`` pixels, batched as the server would."""
        known = self._window_seconds.get(area)
        if known is None:
            known = self._window_seconds[area] = area * self.per_pixel(area, self.best_batch(area))
        return known

    @cached_property
    def _batch_curves(self) -> dict[tuple[int, int], list[float]]:
        return {}

    def batch_curve(self, area: int, limit: int) -> list[float]:
        """Seconds of a batch of 0, 1, ... ``limit`` windows of ``area`` pixels: linear between the measured
        batch sizes (and beyond the largest), never decreasing."""
        key = (area, limit)
        known = self._batch_curves.get(key)
        if known is not None:
            return known
        points = sorted(b for b in self._curves if b <= limit) or [1]
        times = {b: b * area * self.per_pixel(area, b) for b in points}
        curve, top = [0.0], 0.0
        for b in range(1, limit + 1):
            lo = max((p for p in points if p <= b), default=points[0])
            hi = min((p for p in points if p >= b), default=None)
            if hi is None:  # beyond the largest measured batch: its cost per window
                t = times[lo] * b / lo
            elif hi == lo or b < lo:
                t = times[hi] * b / hi if b < lo else times[lo]
            else:
                t = times[lo] + (b - lo) / (hi - lo) * (times[hi] - times[lo])
            top = max(top, t)
            curve.append(top)
        self._batch_curves[key] = curve
        return curve

    def added_seconds(self, area: int, count: int, *, queued: int, limit: int) -> float:
        """What ``count`` more windows of ``area`` pixels add to a queue already holding ``queued`` of their
        shape, in batches of at most ``limit``: the first window of a batch pays what a batch costs
        alone, the others only what they add to it."""
        curve = self.batch_curve(area, limit)
        total = 0.0
        for i in range(count):
            m = (queued + i) % limit
            total += curve[m + 1] - curve[m]
        return total


def probe_sides(max_side: int) -> list[int]:
    """Square window sides worth timing: powers of two up to ``max_side``, and ``max_side``."""
    sides = [s for s in (32, 64, 128, 256, 512, 1024, 2048) if s < max_side]
    return [*sides, max_side]


def measure(
    run: Callable[[int, int], float | None],
    *,
    max_side: int,
    max_batch: int,
    lanes: int = 1,
    budget_s: float = 0.25,
    clock: Callable[[], float] = time.perf_counter,
) -> CostModel:
    """Time ``run(side, batch)`` on square windows up to ``max_side`` and batches up to ``max_batch``.

    ``run`` must block until its result is on the host; it may return the device's own seconds for the
    batch (CUDA events), which then count instead of the wall time: where the host's share of a batch
    overlaps the device's, the device's is what batches queue for. Each point is run once
    to warm up and two or three times timed (the best counts: one scheduling hiccup on a
    shared host once made a 64-px window look 20x dearer and moved every plan). Batch
    sizes are timed side by side at each window size, so that a host whose speed drifts
    over seconds (a shared machine) shifts all of them alike and their ratio, which
    decides batching, holds. A batch size stops growing before a point that would take
    longer than ``budget_s`` (judged from the last one): larger windows are extrapolated,
    which keeps warm-up to a few seconds per model on a CPU.
    """
    # ``lanes``: windows a CPU computes side by side (see cpu_lanes); a batch of that many is measured too.
    growing = sorted({1, min(lanes, max_batch), min(4, max_batch), max_batch})
    samples: list[Sample] = []
    sides = probe_sides(max_side)
    for i, side in enumerate(sides):
        for batch in list(growing):
            run(side, batch)  # first call: allocator, kernels, autotuning
            best = math.inf
            for attempt in range(3):
                start = clock()
                took = run(side, batch)
                best = min(best, clock() - start if took is None else took)
                if attempt and best > budget_s / 4:
                    break
            samples.append(Sample(side * side, batch, best))
            if i + 1 < len(sides) and best * (sides[i + 1] / side) ** 2 > budget_s:
                growing.remove(batch)
    return CostModel(tuple(samples), max_batch)
