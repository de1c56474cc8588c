"""Shape buckets: windows planned to a few shared shapes, so that different uploads batch (issue 30).

Only windows of one shape share a batch. Cut to fit each image exactly, uploads of
different sizes never do; on a CPU that costs nothing (a batch is no cheaper per pixel
than one window), on a GPU it leaves the device mostly idle (a small window pays the
whole per-batch cost and fills few of its multiprocessors).

A bucketed plan cuts every image into windows of a shape ``(h, w)`` whose sides come
from one set (:data:`SIDES`, multiples of 8 about 1.14x apart): an axis no longer than
a side is one window, padded at its end (see :mod:`srserve.service.padding`, which makes
padded windows compute exactly what the whole image would); a longer one is cut into
evenly spread windows of exactly that side. Which sides a model uses, and whether it
uses buckets at all, is its measured cost model's answer (:func:`sides_for`). Which cut
an image takes, exact fit or a bucket, is priced at the queue as it is (:func:`choose`):
what its windows add to the batches already forming. Windows of different buckets may
still share a batch, padded to a shape holding them all, where the cost model says that
is no dearer (:func:`mergeable`; the engine's worker tops up batches so).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

from srserve.service.cost_model import CostModel
from srserve.service.planner import NOISE, Plan
from srserve.service.tiling import Span, Tile, window_length
from srserve.service.tiling import spans as even_spans

#: Bucket sides: multiples of 8 (what tensor cores tile by), 1.11-1.25x apart.
SIDES = (32, 40, 48, 56, 64, 72, 80, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320, 384, 448, 512)
#: A full batch must be at least this much cheaper per pixel than one window for a side to be a bucket.
MIN_GAIN = 1.5
#: Computed pixels allowed above the image's own in a bucketed cut, as a factor.
MAX_OVERHEAD = 1.25
#: Bucketed cuts priced (at full batches) within this of the cheapest are offered to the queue-aware choice.
SHARE = 1.15
#: The default side at which batching's gain is judged (the small windows that buckets are for).
PROBE_SIDE = 64


def batch_gain(cost: CostModel, side: int = PROBE_SIDE) -> float:
    """How many times cheaper per pixel a window of ``side`` is in its best batch than alone."""
    area = side * side
    return cost.per_pixel(area, 1) / cost.per_pixel(area, cost.best_batch(area))


@functools.lru_cache(maxsize=65536)  # bucket areas are few: every image's cuts price the same ones
def full_batch_seconds(cost: CostModel, area: int) -> float:
    """One window of ``area`` pixels as part of a full batch (what bucketing is for)."""
    return area * cost.per_pixel(area, cost.best_batch(area))


@functools.lru_cache(maxsize=256)
def sides_for(cost: CostModel, *, halo: int, max_side: int) -> tuple[int, ...]:
    """The bucket sides for a model with this measured cost; () where batching does not pay (a CPU).

    The sides up to the largest at which a full batch is still :data:`MIN_GAIN` times cheaper per pixel
    than one window: a larger window fills the device alone and runs as well in a shape of its own.
    """
    if not cost.measured:
        return ()
    usable = [s for s in SIDES if 2 * halo < s <= max_side]
    paying = [s for s in usable if batch_gain(cost, s) >= MIN_GAIN]
    if not paying or paying[0] != usable[0]:  # not even the smallest windows batch well: no buckets
        return ()
    return tuple(s for s in usable if s <= paying[-1])


@functools.lru_cache(maxsize=8192)
def _axis(length: int, halo: int, sides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``(count, side)`` options for one axis: one padded window for each side that holds it, else
    the fewest windows of the side that cover it with ``halo``."""
    options = []
    for side in sides:
        if side >= length:
            options.append((1, side))
            continue
        count = max(2, -(-(length - 2 * halo) // (side - 2 * halo)))
        while window_length(length, count, halo) > side:  # rounding of the starts may need one more
            count += 1
        options.append((count, side))
    return tuple(options)


def _spans(length: int, count: int, side: int, halo: int) -> list[Span]:
    if count == 1:  # the whole axis, padded to ``side``; its valid part is the window's start
        return [Span(0, length, 0, length)]
    return even_spans(length, count, halo, window=side)


@dataclass(frozen=True)
class Cut:
    """One bucketed way to cut an image: ``rows`` x ``cols`` windows padded to ``window``."""

    seconds: float  # every window priced as part of a full batch
    pixels: int  # computed
    rows: int
    cols: int
    window: tuple[int, int]


@functools.lru_cache(maxsize=4096)
def cuts(height: int, width: int, *, halo: int, sides: tuple[int, ...], cost: CostModel) -> tuple[Cut, ...]:
    """The bucketed cuts of an ``height x width`` image priced within :data:`SHARE` of the cheapest,
    cheapest first (within the cost model's noise, fewer computed pixels first), computing at most
    :data:`MAX_OVERHEAD` times the image's pixels (or, where no cut can, within :data:`SHARE` of the
    fewest)."""
    if not sides:
        raise ValueError("no bucket sides")
    found = []
    col_options = _axis(width, halo, sides)
    for rows, h in _axis(height, halo, sides):
        for cols, w in col_options:
            count = rows * cols
            found.append(Cut(count * full_batch_seconds(cost, h * w), count * h * w, rows, cols, (h, w)))
    # Where the pixels that fill the device cost the same however many are padding, padding is free by the
    # cost model; it still draws power and memory: no more than MAX_OVERHEAD where some cut allows it.
    least = min(c.pixels for c in found)
    found = [c for c in found if c.pixels <= MAX_OVERHEAD * height * width] or [
        c for c in found if c.pixels <= least * SHARE
    ]
    fastest = min(c.seconds for c in found)
    near = sorted((c for c in found if c.seconds <= fastest * SHARE), key=lambda c: (c.seconds, c.pixels))
    best = min((c for c in near if c.seconds <= fastest * (1 + NOISE)), key=lambda c: (c.pixels, c.seconds))
    return (best, *(c for c in near if c is not best))


@functools.lru_cache(maxsize=4096)
def plan_cut(height: int, width: int, halo: int, cut: Cut) -> Plan:
    """The windows of ``cut``, priced at full batches."""
    h, w = cut.window
    tiles = tuple(Tile(r, c) for r in _spans(height, cut.rows, h, halo) for c in _spans(width, cut.cols, w, halo))
    return Plan(height, width, cut.rows, cut.cols, cut.window, tiles, cut.seconds, bucketed=True)


def choose(
    exact: Plan,
    *,
    halo: int,
    sides: tuple[int, ...],
    cost: CostModel,
    queued: Callable[[tuple[int, int]], int] = lambda window: 0,
    limit: Callable[[tuple[int, int]], int] | None = None,
) -> Plan:
    """The image's windows, priced at the queue as it is: the ``exact`` fit or one of its bucketed cuts.

    Each is priced by what its windows add to the queue (``queued``: windows of that shape waiting;
    ``limit``: the largest batch of it): joining a bucket that others fill costs little, a shape of its
    own pays for whole batches. Within the cost model's noise (of what the image costs alone) a bucket
    of at most :data:`MAX_OVERHEAD` times the image's pixels wins (later uploads can join it), then
    fewer computed pixels. The plan's ``seconds`` is that price, which admission adds up.
    A bucketed tile's spans give its valid part; its plan's ``window`` is the bucket it is padded to.
    """
    bucketed = cuts(exact.height, exact.width, halo=halo, sides=sides, cost=cost)
    options = [exact, *(plan_cut(exact.height, exact.width, halo, c) for c in bucketed)]
    priced = [at_queue(plan, cost, queued, limit) for plan in options]
    alone = min(at_queue(plan, cost, limit=limit).seconds for plan in options)
    # Equal within the noise of what the image costs alone: joining batches makes prices tiny, and a tiny
    # relative difference between two of them is no reason to give up a shared shape.
    cheapest = min(p.seconds for p in priced)
    return min(
        (p for p in priced if p.seconds <= cheapest + NOISE * alone),
        key=lambda p: (not (p.bucketed and p.overhead <= MAX_OVERHEAD), p.computed_pixels, p.seconds),
    )


def at_queue(
    plan: Plan,
    cost: CostModel,
    queued: Callable[[tuple[int, int]], int] = lambda window: 0,
    limit: Callable[[tuple[int, int]], int] | None = None,
) -> Plan:
    """``plan`` with its ``seconds`` what its windows add to the queue as it is (see :func:`choose`): for
    exact-fit windows on a device where batching pays, which share batches only with their own shape."""
    most = (limit or functools.partial(batch_limit, cost))(plan.window)
    area = plan.window[0] * plan.window[1]
    return replace(plan, seconds=cost.added_seconds(area, len(plan.tiles), queued=queued(plan.window), limit=most))


def batch_limit(cost: CostModel, window: tuple[int, int]) -> int:
    """The largest batch worth forming of windows of this shape."""
    return max(1, min(cost.max_batch, cost.best_batch(window[0] * window[1])))


#: A batch not full takes other buckets' windows while its shape is at most this times each one's.
MERGE_AREA = 1.5


@functools.lru_cache(maxsize=65536)
def mergeable(cost: CostModel, a: tuple[int, int], b: tuple[int, int], limit: int) -> bool:
    """Whether windows of shapes ``a`` and ``b`` may run as one batch padded to the smallest shape holding
    both: at most :data:`MERGE_AREA` times each one's area, and by the cost model no dearer than a window
    of each apart (a GPU batch below the size that fills the device costs the same however much of it
    is padding)."""
    union = (max(a[0], b[0]), max(a[1], b[1]))
    area = union[0] * union[1]
    if area > MERGE_AREA * min(a[0] * a[1], b[0] * b[1]):
        return False
    apart = cost.batch_curve(a[0] * a[1], limit)[1] + cost.batch_curve(b[0] * b[1], limit)[1]
    return cost.batch_curve(area, max(2, limit))[2] <= apart
