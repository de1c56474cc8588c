"""Admission by predicted time to the answer, kept honest by measuring real answers.

A request is refused (503) when it would not be answered within
``SR_MAX_QUEUE_WAIT_S``. Its answer time is predicted in three parts:

* **the work ahead of it and its own**, in calibrated device seconds: every queued
  window carries the model's cost-model seconds times a per-route calibration
  (measured over predicted batch turns, so the cores that decoding and encoding take
  from the model are in it), plus what is left of the batches on the device;
* **a queue factor** per priority: real time from enqueue to its last window over the
  predicted work, learnt only from requests that queued behind at least
  :data:`LONG_QUEUE_FRACTION` of the limit. Near-empty queues are dominated by fixed
  costs and say nothing about long ones; a factor learnt there and multiplied into a
  long queue is how a server ends up refusing load it has room for;
* **the time after the compute** (paste, encode, the hand-back to the event loop),
  measured on every answer and predicted as a fixed part plus a part per output
  pixel: added, never multiplied.

A refusal at normal priority is also a promise: its ``Retry-After`` tells the
client when there will be room, and a client that honours it comes back then.
Until then (and :data:`PROMISE_GRACE_S` after) its work counts ahead of every
lower priority, so that low-priority work (batch jobs, and clients demoted for
resending early: :mod:`.retries`) does not take the room promised to it.

:class:`WaitPredictor` is plain state with no lock and no clock of its own: the engine
calls it under its lock with its clock's times, so tests drive it with hand-made ones.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

#: Weight of the newest batch in the running sums that calibrate predicted batch times.
CALIBRATION_WEIGHT = 0.1
#: A request teaches the queue factor when its predicted work was at least this share of the limit.
LONG_QUEUE_FRACTION = 0.2
#: ... or at least this many seconds when there is no limit.
LONG_QUEUE_S = 0.5
#: The queue factor is this percentile of the recent real/predicted ratios of long queues: a little
#: over their middle, so that what is admitted at the limit is answered within it.
QUEUE_QUANTILE = 75
#: The factor never leaves this range, however odd the measurements: a bound on any runaway.
FACTOR_RANGE = (0.5, 2.0)
#: How many recent answers each estimate is taken over.
WINDOW = 64
#: A refused request's promised return counts ahead of lower priorities until this long after its Retry-After.
PROMISE_GRACE_S = 1.0
#: Promises remembered per rank (a bound on memory under overload; the oldest are dropped first).
MAX_PROMISES = 1024


class Priority(StrEnum):
    """Who goes first and who is shed first: interactive uploads before batch jobs."""

    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return 0 if self is Priority.NORMAL else 1


class QueueFull(Exception):
    """The server will not queue this request now; retry after ``retry_after`` seconds (503).

    ``reason``: ``queue_wait`` (it would not be answered in time) or ``queue_full`` (too many windows queued).
    """

    def __init__(self, message: str, *, reason: str, retry_after: float, predicted_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
        self.predicted_s = predicted_s


@dataclass(frozen=True)
class Prediction:
    """What admission expected of one request, in seconds from its enqueueing."""

    ahead_s: float  # calibrated work ahead of it (queued at its priority or above, and on the device)
    own_s: float  # its own calibrated compute
    factor: float  # the queue factor applied to both
    post_s: float  # from its last window to its answer

    @property
    def computed_s(self) -> float:
        return self.factor * (self.ahead_s + self.own_s)

    @property
    def answer_s(self) -> float:
        return self.computed_s + self.post_s


@dataclass
class Ticket:
    """A request admitted before its decode, on the size its header gave: its work is reserved until queued."""

    rank: int
    own_s: float  # the calibrated seconds reserved
    prediction: Prediction
    admitted: float  # on the engine's clock; its answer time is measured from here
    spent: bool = False  # queued (the reservation became queued work) or released


class WaitPredictor:
    """Calibrated seconds of queued work per priority rank, and the estimates learnt from real answers.

    Args:
        max_wait_s: predicted answer time beyond which :meth:`admit` refuses.
        min_retry_after_s: the least ``Retry-After`` given with a refusal.
    """

    def __init__(self, max_wait_s: float = math.inf, min_retry_after_s: float = 1.0) -> None:
        self.max_wait_s = max_wait_s
        self.min_retry_after_s = min_retry_after_s
        self._queued_s = [0.0 for _ in Priority]  # calibrated seconds queued, per rank
        # Admitted on the size in the upload's header, still decoding: not in the queue, but ahead of what comes next.
        self._reserved_s = [0.0 for _ in Priority]
        self._busy_until = 0.0  # predicted end of the work on the device
        self._inflight_s = 0.0  # predicted seconds of the batches started and not finished
        # Per rank, apart: low priority is overtaken by design and must not inflate normal's predictions.
        self._ratios: list[deque[float]] = [deque(maxlen=WINDOW) for _ in Priority]
        self._factor = [1.0 for _ in Priority]
        self._post: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (output pixels, seconds)
        self._post_fixed_s = 0.0
        self._post_per_pixel_s = 0.0
        self._calibration: dict[tuple, tuple[float, float]] = {}  # route key -> running (measured, predicted) s
        # Per rank: (due, seconds) of refused requests told to come back at ``due``; and their running sum.
        self._promised: list[deque[tuple[float, float]]] = [deque() for _ in Priority]
        self._promised_s = [0.0 for _ in Priority]
        self._typical_s = [0.0 for _ in Priority]  # running mean of admitted requests' own seconds

    @property
    def long_queue_s(self) -> float:
        return LONG_QUEUE_FRACTION * self.max_wait_s if math.isfinite(self.max_wait_s) else LONG_QUEUE_S

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
        """Calibrated seconds of work ahead of a request at ``rank`` (before the queue factor)."""
        queued = sum(self._queued_s[: rank + 1]) + sum(self._reserved_s[: rank + 1])
        return queued + max(0.0, self._busy_until - now) + self.promised(rank, now)

    # -- promises: refused requests told when to come back ---------------------
    def promised(self, rank: int, now: float) -> float:
        """Seconds of work promised a return to requests of higher priority than ``rank``."""
        total = 0.0
        for r in range(rank):
            self._expire(r, now)
            total += self._promised_s[r]
        return total

    def promise(self, rank: int, own_s: float | None, retry_after_s: float, now: float) -> None:
        """A request at ``rank`` was refused with ``Retry-After: retry_after_s`` (its own seconds, if known)."""
        if rank + 1 >= len(Priority):
            return  # nothing ranks below it
        seconds = self._typical_s[rank] if own_s is None else own_s
        promised = self._promised[rank]
        promised.append((now + math.ceil(retry_after_s), seconds))
        self._promised_s[rank] += seconds
        if len(promised) > MAX_PROMISES:
            self._promised_s[rank] -= promised.popleft()[1]

    def _expire(self, rank: int, now: float) -> None:
        promised = self._promised[rank]
        while promised and promised[0][0] + PROMISE_GRACE_S < now:
            self._promised_s[rank] -= promised.popleft()[1]
        if not promised:
            self._promised_s[rank] = 0.0  # no drift from rounding

    def _kept(self, rank: int, own_s: float, now: float) -> None:
        """A request at ``rank`` was admitted: the oldest promise due by now is taken as kept by it."""
        self._typical_s[rank] = own_s if not self._typical_s[rank] else 0.9 * self._typical_s[rank] + 0.1 * own_s
        self._expire(rank, now)
        promised = self._promised[rank]
        if promised and promised[0][0] <= now + PROMISE_GRACE_S:
            self._promised_s[rank] -= promised.popleft()[1]

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing admitted on its way to the queue."""
        return not any(self._queued_s) and not any(self._reserved_s)

    def wait(self, rank: int, now: float) -> float:
        """Seconds a request at ``rank`` queued at ``now`` would wait before its first window computes."""
        return self.ahead(rank, now) * self._factor[rank]

    def post(self, out_pixels: int) -> float:
        """Predicted seconds from a request's last window to its answer, for an output of ``out_pixels``."""
        return self._post_fixed_s + self._post_per_pixel_s * out_pixels

    def predict(self, rank: int, own_s: float, out_pixels: int, now: float) -> Prediction:
        return Prediction(self.ahead(rank, now), own_s, self._factor[rank], self.post(out_pixels))

    def admit(self, rank: int, own_s: float, out_pixels: int, now: float, *, queue_empty: bool) -> Prediction:
        """The prediction for a request of ``own_s`` compute, or :class:`QueueFull` when it would be late.

        Judged on when its answer would be ready, so that what is admitted is
        answered within the limit; a large request counts at most half the limit
        of its own compute, or it would only ever get into an empty queue. Any
        request is admitted into an empty queue (one with no room promised to higher priorities).
        """
        p, limit = self.predict(rank, own_s, out_pixels, now), self.max_wait_s
        judged = p.factor * (p.ahead_s + min(own_s, limit / 2)) + p.post_s
        if not (queue_empty and not self.promised(rank, now)) and judged > limit:
            wait = p.factor * p.ahead_s
            retry_after = max(self.min_retry_after_s, judged - limit)
            self.promise(rank, own_s, retry_after, now)
            raise QueueFull(
                f"it would be answered in {judged:.1f} s ({wait:.1f} s of work ahead, {judged - wait:.1f} s "
                f"of its own), over SR_MAX_QUEUE_WAIT_S = {limit:g} s",
                reason="queue_wait",
                retry_after=retry_after,
                predicted_s=judged,
            )
        self._kept(rank, own_s, now)
        return p

    def queued(self, rank: int, seconds: float) -> None:
        self._queued_s[rank] += seconds

    def reserve(self, rank: int, seconds: float) -> None:
        """Work admitted before its decode: counted ahead of later requests until :meth:`unreserve`."""
        self._reserved_s[rank] += seconds

    def unreserve(self, rank: int, seconds: float) -> None:
        self._reserved_s[rank] = max(0.0, self._reserved_s[rank] - seconds)

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

    # -- learning from real answers ------------------------------------------
    def observe_answer(
        self, rank: int, p: Prediction, computed_s: float, answer_s: float, out_pixels: int, recalibrated: float = 1.0
    ) -> None:
        """Fold one request's real times (from its enqueueing) into the estimates.

        ``computed_s``: when its last window was pasted; ``answer_s``: when its answer was ready.
        ``recalibrated``: its route's calibration now over when it was predicted. The factor learns only
        what the calibration does not: an error the calibration has fixed since (a start-up cost model
        off by 4x, say) must not linger in the factor too, or the two together overcorrect.
        """
        self._post.append((float(out_pixels), max(0.0, answer_s - computed_s)))
        pixels, seconds = np.array(self._post).T
        # A fixed part (what the smallest answers take) and a per-pixel part over it (encode scales with pixels).
        self._post_fixed_s = float(np.percentile(seconds, 10))
        self._post_per_pixel_s = float(np.maximum(seconds - self._post_fixed_s, 0).sum() / max(pixels.sum(), 1.0))
        work = (p.ahead_s + p.own_s) * recalibrated
        if work < self.long_queue_s:
            return  # a near-empty queue says nothing about long ones
        ratios = self._ratios[rank]
        ratios.append(computed_s / work)
        if len(ratios) >= 8:
            lo, hi = FACTOR_RANGE
            self._factor[rank] = min(hi, max(lo, float(np.percentile(ratios, QUEUE_QUANTILE))))
