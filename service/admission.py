"""Admission by predicted wait: how long the work queued ahead of a request will take.

Every queued window carries its predicted seconds (the model's cost model times
a per-route calibration: measured over predicted batch time). The wait ahead of
a request is the work queued at its priority or above plus what is left of the
running batch, scaled by a per-priority correction learnt from how long
admitted requests really took to be answered. A request is refused (503) when
its predicted answer time exceeds the limit, instead of queueing for a minute.

:class:`WaitPredictor` is plain state with no lock of its own: the engine calls
it under its lock.
"""

from __future__ import annotations

import math
from collections import deque
from enum import StrEnum

import numpy as np

#: Weight of the newest batch in the running sums that calibrate predicted batch times.
CALIBRATION_WEIGHT = 0.1
#: Predictions are scaled by this percentile of recent real/predicted times: shortening the queue a
#: little costs no throughput under overload (it never runs dry), a long tail costs every user.
WAIT_QUANTILE = 95
#: Predicted waits shorter than this are not used to correct the predictions.
MIN_OBSERVED_WAIT_S = 0.05


class Priority(StrEnum):
    """Who goes first and who is shed first: interactive uploads before batch jobs."""

    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return 0 if self is Priority.NORMAL else 1


class QueueFull(Exception):
    """The server will not queue this request now; retry after ``retry_after`` seconds (503).

    ``reason``: ``queue_wait`` (the predicted wait is too long) or ``queue_full`` (too many windows queued).
    """

    def __init__(self, message: str, *, reason: str, retry_after: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class WaitPredictor:
    """Predicted seconds of queued work, per priority rank, and the corrections learnt from reality.

    Args:
        max_wait_s: predicted answer time beyond which :meth:`admit` refuses.
        min_retry_after_s: the least ``Retry-After`` given with a refusal.
    """

    def __init__(self, max_wait_s: float = math.inf, min_retry_after_s: float = 1.0) -> None:
        self.max_wait_s = max_wait_s
        self.min_retry_after_s = min_retry_after_s
        self._queued_s = [0.0 for _ in Priority]  # calibrated seconds queued, per rank
        self._busy_until = 0.0  # predicted end of the work on the device (monotonic)
        self._inflight_s = 0.0  # predicted seconds of the batches started and not finished
        # Per rank, apart: low priority is overtaken by design and must not inflate normal's predictions.
        self._ratios: list[deque[float]] = [deque(maxlen=64) for _ in Priority]
        self._correction = [1.0 for _ in Priority]
        self._calibration: dict[tuple, tuple[float, float]] = {}  # route key -> running (measured, predicted) s

    # -- per route: batch times ------------------------------------------
    def calibration(self, key: tuple) -> float:
        """Measured over predicted batch time for a route: what its predictions are multiplied by."""
        measured, predicted = self._calibration.get(key, (1.0, 1.0))
        return min(100.0, max(0.01, measured / predicted))

    def calibrate(self, key: tuple, predicted: float, elapsed: float) -> None:
        """Fold one batch into running sums of measured and predicted time (large batches weigh most)."""
        if predicted <= 0:
            return
        old = self._calibration.get(key)
        if old is None:
            self._calibration[key] = (elapsed, predicted)
        else:
            a = CALIBRATION_WEIGHT
            self._calibration[key] = ((1 - a) * old[0] + a * elapsed, (1 - a) * old[1] + a * predicted)

    # -- the queue ---------------------------------------------------------
    def ahead(self, rank: int, now: float) -> float:
        """Calibrated seconds of work ahead of a request at ``rank`` (before the wait correction)."""
        return sum(self._queued_s[: rank + 1]) + max(0.0, self._busy_until - now)

    def wait(self, rank: int, now: float) -> float:
        """Seconds a request at ``rank`` queued at ``now`` would wait before its first window computes."""
        return self.ahead(rank, now) * self._correction[rank]

    def admit(self, rank: int, own_s: float, now: float, *, queue_empty: bool) -> float:
        """The uncorrected predicted answer time of a request of ``own_s`` compute, or :class:`QueueFull`.

        Judged on when its own windows would be done, so that what is admitted is
        answered within the limit; a large request counts at most half the limit
        of its own, or it would only get into an empty queue. Any request is
        admitted into an empty queue.
        """
        ahead, limit = self.ahead(rank, now), self.max_wait_s
        wait, done = ahead * self._correction[rank], (ahead + min(own_s, limit / 2)) * self._correction[rank]
        if not queue_empty and done > limit:
            raise QueueFull(
                f"the predicted wait is {wait:.1f} s + {done - wait:.1f} s of its own, "
                f"over SR_MAX_QUEUE_WAIT_S = {limit:g} s",
                reason="queue_wait",
                retry_after=max(self.min_retry_after_s, done - limit),
            )
        return ahead + own_s

    def queued(self, rank: int, seconds: float) -> None:
        self._queued_s[rank] += seconds

    def withdrawn(self, rank: int, seconds: float) -> None:
        """Admitted work that never reached the queue (its output could not be allocated)."""
        self._queued_s[rank] = max(0.0, self._queued_s[rank] - seconds)

    def started(self, costs: list[tuple[int, float]], now: float, *, queue_empty: bool) -> float:
        """Windows of ``(rank, seconds)`` left the queue for the device; returns the batch's seconds."""
        for rank, seconds in costs:
            self._queued_s[rank] = max(0.0, self._queued_s[rank] - seconds)
        if queue_empty:  # no drift from rounding
            self._queued_s = [0.0 for _ in Priority]
        total = sum(s for _, s in costs)
        self._inflight_s += total
        self._busy_until = max(now, self._busy_until) + total
        return total

    def finished(self, seconds: float, now: float) -> None:
        """A batch of ``seconds`` (what :meth:`started` returned) is done at ``now``.

        What is left on the device is re-anchored on the real end of this batch:
        a batch faster than predicted must not push the next one's predicted end
        later, or under sustained load the error adds up batch after batch.
        """
        self._inflight_s = max(0.0, self._inflight_s - seconds)
        self._busy_until = now + self._inflight_s if self._inflight_s > 1e-9 else 0.0

    def observe_answer(self, rank: int, predicted: float, real: float) -> None:
        """Fold a request's real time to its answer into the correction at its ``rank``.

        ``predicted`` is what :meth:`admit` returned. Batch times are calibrated
        already; this catches the rest (the CPU shared with decoding and encoding
        under load, bursts, the encode after compute). Predictions are scaled by
        the 95th percentile of recent real/predicted ratios, not their mean: at
        the limit, admitted requests should be answered within the limit, not about it.
        """
        if predicted < MIN_OBSERVED_WAIT_S:
            return  # near-empty queues say nothing about the error
        ratios = self._ratios[rank]
        ratios.append(real / predicted)
        if len(ratios) >= 8:
            self._correction[rank] = min(3.0, max(0.5, float(np.percentile(ratios, WAIT_QUANTILE))))
