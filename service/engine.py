"""The worker that owns a device: windows from every queued request, batched.

The event loop plans each image's windows, checks admission and enqueues them
(``submit``); one thread per device collects batches (``collect_batch``), runs
them, pastes each window's core into its request's output, and resolves the
request's future on the loop.

Admission by predicted wait is :mod:`srserve.service.admission`; this module keeps its
numbers up to date (what is queued, started and finished).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from srserve.service import buckets, padding, precision
from srserve.service.admission import Prediction, Priority, QueueFull, Ticket, WaitPredictor
from srserve.service.batch_runner import BatchRunner, Runner
from srserve.service.batching import STOP, Backlog, Message, collect_batch
from srserve.service.blend import Blend
from srserve.service.cost_model import measure
from srserve.service.cpu_lanes import CpuLanes
from srserve.service.inference import predict
from srserve.service.jobs import DeadlineExceeded, DeviceOutOfMemory, Job, Launched, Receipt, Stage, Work, is_oom
from srserve.service.metrics import Metrics
from srserve.service.model_pool import ModelEntry, ModelPool
from srserve.service.planner import Plan
from srserve.service.priority import lower_this_thread
from srserve.service.routing import Route
from srserve.service.windows import new_output, place, plan_windows, stack_windows, valid_sizes

log = logging.getLogger("srserve.engine")

#: Host time kept to stack and launch the next batch before the device is predicted free.
HOLD_MARGIN_S = 0.001


class Engine:
    """Owns ``pool``'s device; batches windows across requests.

    Args:
        pool: the loaded models.
        metrics: where batch, queue and memory figures go.
        max_batch_tiles: most windows in one batch.
        max_batch_delay_s: longest wait for a batch to fill after its first window.
        max_queue_tiles: queued windows beyond which ``submit`` raises :class:`QueueFull` (a memory bound).
        max_queue_wait_s: predicted wait beyond which ``submit`` raises :class:`QueueFull`.
        min_retry_after_s: the least ``Retry-After`` given with a refusal.
        clock: the monotonic clock every time of the queue's account is read from (tests pass their own).
        thread_nice: nice of the worker thread (see :mod:`srserve.service.priority`).
        lanes: on a CPU, the lanes batches run on side by side under load (None: one batch at a time, in the worker).
        runner: runs the batches instead of a :class:`BatchRunner` on ``pool.device`` (the bench's simulated
            accelerator; never set by the service itself).
        use_buckets: let warm-up choose shared window shapes where batching pays (see :mod:`srserve.service.buckets`).
    """

    def __init__(
        self,
        pool: ModelPool,
        metrics: Metrics,
        *,
        max_batch_tiles: int,
        max_batch_delay_s: float,
        max_queue_tiles: int,
        max_queue_wait_s: float = math.inf,
        min_retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        thread_nice: int = 0,
        lanes: CpuLanes | None = None,
        runner: Runner | None = None,
        use_buckets: bool = True,
    ) -> None:
        self.clock = clock
        self.use_buckets = use_buckets
        self.thread_nice = thread_nice  # the worker yields the cores to the event loop (see priority)
        self.pool = pool
        self.metrics = metrics
        self.max_batch_tiles = max_batch_tiles
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_tiles = max_queue_tiles
        self.max_queue_wait_s = max_queue_wait_s
        self._source: queue.Queue = queue.Queue()
        self._batch_limits: dict[tuple, int] = {}  # group key -> largest batch worth forming
        # Windows queued per route and shape: what a new window would batch with.
        self._queued_shapes: dict[tuple, dict[tuple, int]] = {}
        self._backlog: Backlog[Work] = Backlog(limit=lambda key: self._batch_limits.get(key, max_batch_tiles))
        self._lock = threading.Lock()  # guards the counters below
        self._queued = 0
        self._arriving = 0  # requests being read or decoded: work that may join a batch soon
        self._waits = WaitPredictor(max_queue_wait_s, min_retry_after_s)
        self.lanes = lanes if pool.device.type == "cpu" and runner is None else None
        self.runner: Runner = runner or BatchRunner(pool.device, self.lanes)
        self._last_done = 0.0  # when the previous batch's results were in
        # Per batch width (lanes it takes): device seconds over the cost model's, lately (how long to hold).
        self._device_ratio: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name=f"srserve-worker-{pool.device}", daemon=True)
        metrics.queue_capacity.set(max_queue_tiles)
        if math.isfinite(max_queue_wait_s):
            metrics.max_queue_wait.set(max_queue_wait_s)

    # -- loop side -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish everything queued, then end the worker."""
        if self._thread.is_alive():
            self._source.put(STOP)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued_tiles(self) -> int:
        return self._queued

    @contextmanager
    def arriving(self) -> Iterator[Callable[[], None]]:
        """Mark a request on its way (reading, decoding); the yielded callable ends that early.

        Pass it to :meth:`submit` so the count drops before the work is queued:
        the collector releases a partial batch at once only when nothing is on its way.
        """
        with self._lock:
            self._arriving += 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                with self._lock:
                    self._arriving -= 1

        try:
            yield release
        finally:
            release()

    def plan_for(self, route: Route, height: int, width: int) -> Plan:
        """The windows this image is cut into (one untiled piece for whole-image resizes)."""
        entry = route.entry

        def queued(window: tuple[int, int]) -> int:
            """Windows queued now that one of ``window`` would batch with (its shape, or one it merges with)."""
            shapes = self._queued_shapes.get(route.key)
            if not shapes:
                return 0
            if not entry.buckets:  # only bucketed batches are topped up with other shapes
                return shapes.get(window, 0)
            limit = buckets.batch_limit(entry.cost, window)
            return sum(
                n
                for shape, n in tuple(shapes.items())  # a copy: the worker changes it
                if shape == window or (len(shape) == 2 and buckets.mergeable(entry.cost, shape, window, limit))
            )

        return plan_windows(route, height, width, self.pool.window, queued)

    def predicted_wait(self, priority: Priority = Priority.NORMAL) -> float:
        """Seconds a request queued now would wait before its first window computes."""
        with self._lock:
            return self._waits.wait(priority.rank, self.clock())

    def check_wait(self, priority: Priority = Priority.NORMAL) -> None:
        """:class:`QueueFull` when the wait ahead alone is over the limit, whatever a request's own size.

        Cheap (no plan, no image): under overload most refusals are made here, before an upload is read.
        """
        rank, limit = priority.rank, self.max_queue_wait_s
        with self._lock:
            now = self.clock()
            wait = self._waits.wait(rank, now)
            if wait <= limit or not (self._queued or self._waits.promised(rank, now)):
                return
            retry_after = max(self._waits.min_retry_after_s, wait - limit)
            self._waits.promise(rank, None, retry_after, now)
        raise QueueFull(
            f"it would wait {wait:.1f} s before its turn, over SR_MAX_QUEUE_WAIT_S = {limit:g} s",
            reason="queue_wait",
            retry_after=retry_after,
            predicted_s=wait,
        )

    def predict(self, route: Route, height: int, width: int, priority: Priority = Priority.NORMAL) -> Prediction:
        """What admission would expect now of an image of ``height`` x ``width`` through ``route``."""
        plan = self.plan_for(route, height, width)
        with self._lock:
            own = self._waits.calibration(route.key) * plan.seconds
            return self._waits.predict(priority.rank, own, _pixels(route.out_size), self.clock())

    def observe_answer(self, job: Receipt, answered: float | None = None) -> float:
        """A job's answer is ready (encoded) at ``answered`` (now): teach admission; returns real/predicted."""
        answered = self.clock() if answered is None else answered
        p = job.prediction
        computed = (job.computed if job.computed is not None else answered) - job.admitted
        real = answered - job.admitted
        with self._lock:
            recalibrated = self._waits.calibration(job.key) / job.calibration if job.key else 1.0
            self._waits.observe_answer(job.rank, p, computed, real, job.out_pixels, recalibrated)
        ratio = real / max(p.answer_s, 1e-3)
        self.metrics.answer_prediction.observe(ratio)
        return ratio

    def _stages(
        self, route: Route, height: int, width: int, then: Sequence[Route]
    ) -> tuple[Plan, float, list[Stage], float, int]:
        """(Under the lock) the first plan, its calibration, the later stages, the calibrated seconds of
        them all, and the output's pixels."""
        plan = self.plan_for(route, height, width)
        factor = self._waits.calibration(route.key)
        later, size = [], route.out_size
        for r in then:
            later.append(Stage(r, self.plan_for(r, *size), self._waits.calibration(r.key)))
            size = r.out_size
        own = factor * plan.seconds + sum(s.factor * s.plan.seconds for s in later)
        return plan, factor, later, own, _pixels(size)

    def admit(
        self,
        route: Route,
        height: int,
        width: int,
        *,
        priority: Priority = Priority.NORMAL,
        then: Sequence[Route] = (),
    ) -> Ticket:
        """Admit a request on the size its upload's header gives, before paying for its decode.

        Its predicted work is reserved at once, so that requests decoding side by side are
        judged behind one another; :meth:`submit` with the ticket queues it, :meth:`release` gives
        the reservation back when the request ends before that. Raises :class:`QueueFull`.
        """
        rank = priority.rank
        with self._lock:
            _, _, _, own, out_pixels = self._stages(route, height, width, then)
            now = self.clock()
            prediction = self._waits.admit(rank, own, out_pixels, now, queue_empty=self._waits.idle)
            self._waits.reserve(rank, own)
        return Ticket(rank, own, prediction, now)

    def release(self, ticket: Ticket) -> None:
        """Give back an admitted request's reservation (it failed or left before :meth:`submit`)."""
        with self._lock:
            if not ticket.spent:
                ticket.spent = True
                self._waits.unreserve(ticket.rank, ticket.own_s)

    def submit(
        self,
        route: Route,
        pixels: np.ndarray,
        deadline: float,
        *,
        priority: Priority = Priority.NORMAL,
        arrived: Callable[[], None] | None = None,
        into_image: bool = False,
        then: Sequence[Route] = (),
        ticket: Ticket | None = None,
    ) -> Job:
        """Queue one request; raises :class:`QueueFull` when it is not admitted.

        ``arrived`` (from :meth:`arriving`) is called just before the work is queued.
        ``into_image``: stitch 8-bit RGB output into a Pillow image (what the
        encoder reads) instead of an array, so a large result exists once.
        ``then``: routes that run after ``route`` on its output, on the device, as
        one job (restore, then upscale); admitted now for the time of all of them.
        ``ticket``: from :meth:`admit`; the request is not judged again (its priority is the ticket's).
        """
        h, w = pixels.shape[:2]
        rank = priority.rank if ticket is None else ticket.rank
        with self._lock:
            plan, factor, later, own, out_pixels = self._stages(route, h, w, then)
            tiles = len(plan.tiles)
            now = self.clock()
            if ticket is None:
                predicted = self._waits.admit(rank, own, out_pixels, now, queue_empty=self._waits.idle)
            else:
                predicted = ticket.prediction
            # A chained job queues one stage's windows at a time: it is admitted for its largest.
            need = max([tiles, *(len(s.plan.tiles) for s in later)])
            if self._queued and self._queued + need > self.max_queue_tiles:
                raise QueueFull(
                    f"{self._queued} windows queued; this request needs {need} more "
                    f"(SR_MAX_QUEUE_TILES = {self.max_queue_tiles})",
                    reason="queue_full",
                    retry_after=max(self._waits.min_retry_after_s, self._waits.wait(rank, now)),
                    predicted_s=predicted.answer_s,
                )
            if ticket is not None and not ticket.spent:  # the reservation becomes queued work
                ticket.spent = True
                self._waits.unreserve(rank, ticket.own_s)
            self._queued += tiles
            self._waits.queued(rank, own)
            self._publish_queue_locked()
        try:
            out = new_output(route, pixels, as_image=into_image and not later)
        except BaseException:  # e.g. MemoryError for a huge output: its capacity goes back
            with self._lock:
                self._queued -= tiles
                self._waits.withdrawn(rank, own)
                self._publish_queue_locked()
            raise
        for r, p in [(route, plan), *((s.route, s.plan) for s in later)]:
            self.metrics.image_pixels.labels(r.entry.name).inc(p.image_pixels)
            self.metrics.computed_pixels.labels(r.entry.name).inc(p.computed_pixels)
        loop = asyncio.get_running_loop()
        job = Job(
            route,
            pixels,
            out,
            plan,
            tiles,
            deadline,
            loop.create_future(),
            loop,
            rank=rank,
            into_image=into_image,
            later=later,
            plans=[plan, *(s.plan for s in later)],
            prediction=predicted,
            enqueued=now,
            admitted=now if ticket is None else ticket.admitted,
            first_key=route.key,
            calibration=factor,
            blend=Blend(route.out_size, pixels.shape[:2], route.scale) if route.blend else None,
        )
        items = self._items(job, route, plan, factor)
        if arrived is not None:
            arrived()
        self._source.put(Message(items, rank))
        return job

    def _items(self, job: Job, route: Route, plan: Plan, factor: float) -> list[tuple[tuple, Work]]:
        """The queue entries of one stage's windows, keyed by what may batch together."""
        shape = (*plan.window, route.size_arg) if not route.tiled else plan.window
        key = (route.key, shape)
        if key not in self._batch_limits:
            best = route.entry.cost.best_batch(plan.window[0] * plan.window[1])
            if self.lanes is not None:
                # On a CPU a batch beyond one window per lane only makes its first windows (and their
                # encodes, which would overlap the compute) wait for its last.
                best = min(best, self.lanes.lanes)
            self._batch_limits[key] = max(1, min(self.max_batch_tiles, best))
        per_window = plan.seconds / len(plan.tiles)
        with self._lock:
            shapes = self._queued_shapes.setdefault(route.key, {})
            shapes[shape] = shapes.get(shape, 0) + len(plan.tiles)
        work = [Work(job, route, t, per_window, factor * per_window, job.rank, plan.window, key) for t in plan.tiles]
        return [(key, w) for w in work]

    def _next_stage(self, job: Job) -> None:
        """(Worker) queue the next model of a chained job on the output of the one just done."""
        stage = job.later.pop(0)
        pixels = job.out
        assert isinstance(pixels, np.ndarray)  # only the last stage stitches into an image
        job.route, job.plan, job.pixels = stage.route, stage.plan, pixels
        job.out = new_output(stage.route, pixels, as_image=job.into_image and not job.later)
        job.blend = Blend(stage.route.out_size, pixels.shape[:2], stage.route.scale) if stage.route.blend else None
        job.remaining = len(stage.plan.tiles)
        items = self._items(job, stage.route, stage.plan, stage.factor)
        with self._lock:  # admitted with its seconds and for its largest stage: no second check
            self._queued += len(items)
            self._publish_queue_locked()
        self._source.put(Message(items, job.rank))

    def _publish_queue_locked(self) -> None:
        """Set the queue gauges; the caller holds the lock, so they match the accounting."""
        self.metrics.queued_tiles.set(self._queued)
        now = self.clock()
        for p in Priority:
            self.metrics.predicted_wait.labels(p.value).set(self._waits.wait(p.rank, now))

    # -- worker side -----------------------------------------------------
    def warm_up(self) -> None:
        """Run each learned model, timing window sizes and batches: its cost model (see ``cost_model``)."""
        rng = np.random.default_rng(0)
        for entry in self.pool.entries():
            if entry.auto_precision and self.pool.device.type == "cuda":  # before timing: it changes the cost
                self._choose_precision(entry)

            def run(
                side: int, batch: int, module: torch.nn.Module = entry.module, precision: str = entry.precision
            ) -> float | None:
                # Noise, not zeros: on a CPU all-zero activations run measurably faster than a photo's.
                windows = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
                # Through the runner, as batches will run: on a CPU its lanes decide what a batch costs.
                pending = self.runner.launch(module, windows, precision=precision)
                pending.wait()
                pending.release()
                # An overlapping device's own time (its host share runs beside the next batch); else the wall time.
                return pending.device_s if self.runner.overlaps else None

            started = time.monotonic()
            side = entry.max_window(self.pool.window)
            lanes = self.lanes.lanes if self.lanes is not None else 1
            entry.cost = measure(run, max_side=side, max_batch=self.max_batch_tiles, lanes=lanes)
            # A CPU's batches gain through its lanes, as priced at a full batch today (see _bucket_sides).
            entry.queue_priced = self.lanes is None and buckets.batch_gain(entry.cost) >= buckets.MIN_GAIN
            entry.buckets = self._bucket_sides(entry, side)
            log.info("measured %s x%d in %.1f s", entry.name, int(entry.scale), time.monotonic() - started)
        if self.pool.device.type == "cuda":
            torch.cuda.synchronize(self.pool.device)

    def _bucket_sides(self, entry: ModelEntry, max_side: int) -> tuple[int, ...]:
        """Shared window shapes where the measured cost says batching pays and padding is exact (buckets)."""
        if not self.use_buckets or self.lanes is not None or entry.whole:
            # A padded batch runs in one call (its masks are on the module), so on a CPU the lanes, where
            # whatever batching gains there comes from, are not a padded batch's. A network without an exact
            # halo (whole images, or blended windows) has no exact padding either.
            return ()
        gain = buckets.batch_gain(entry.cost)
        sides = buckets.sides_for(entry.cost, halo=entry.radius, max_side=max_side)
        if sides and (entry.grid != 1 or not padding.pads_exactly(entry.module)):
            log.info("%s x%d: windows fit each image (padding is not exact for it)", entry.name, int(entry.scale))
            return ()
        if sides:
            log.info(
                "%s x%d: bucket windows of %d-%d px (a full batch %.1fx cheaper per pixel than one window)",
                *(entry.name, int(entry.scale), sides[0], sides[-1], gain),
            )
        return sides

    def _choose_precision(self, entry: ModelEntry) -> None:
        images = precision.probe_images()

        def run(p: str) -> np.ndarray:
            return predict(entry.module, images, device=self.pool.device, precision=p)

        entry.precision, entry.precision_psnr_db = precision.choose(run, candidates=entry.precisions)
        tried = ", ".join(f"{p} {db:.1f} dB" for p, db in entry.precision_psnr_db.items())
        log.info("%s x%d runs %s (against fp32: %s)", entry.name, int(entry.scale), entry.precision, tried)

    def _run(self) -> None:
        lower_this_thread(self.thread_nice)
        # Launched and not yet completed, oldest first: on CUDA the batch on the device while the next is
        # prepared; on CPU lanes one batch per lane (and the next, queued for the first lane to free up).
        inflight: deque[Launched] = deque()
        slots = self.runner.slots
        while True:
            for done in [x for x in inflight if x.pending.done()]:  # lanes finish out of order
                inflight.remove(done)
                self._complete(done)
            busy = sum(x.width for x in inflight) >= slots
            first_free = min((x.free_at for x in inflight), default=0.0)
            batch = collect_batch(
                self._source,
                self._backlog,
                max_items=self.max_batch_tiles,
                max_delay=self.max_batch_delay_s,
                arriving=lambda: self._arriving,
                block=not busy,
                clock=self.clock,
                # While the device is busy a partial batch waits for company at no cost, until just
                # before it is free (the host needs that long to stack and launch the next).
                hold_until=first_free - HOLD_MARGIN_S if busy else None,
                # A free lane beside busy ones: take work as it comes, or see to the first batch due back.
                until=first_free if inflight and not busy else None,
            )
            if batch is None:
                while inflight:
                    self._complete(inflight.popleft())
                return
            if batch:
                batch = self._top_up(batch)
            # Alone (nothing else running, queued or on its way): a CPU runs it on every core at once.
            alone = not inflight and not len(self._backlog) and not self._arriving
            launched = self._start(batch, alone=alone) if batch else None  # runs while earlier ones finish
            del batch
            if launched is not None and not self.runner.overlaps:
                self._complete(launched)
                launched = None
            waited = False
            if launched is not None:
                launched.width = slots if alone else launched.pending.width
                launched.device_s = self._device_seconds(launched.items)
                inflight.append(launched)
            elif inflight:  # nothing due: wait for the batch predicted to finish first
                first = min(inflight, key=lambda x: x.free_at)
                inflight.remove(first)
                self._complete(first)
                waited = True
            while sum(x.width for x in inflight) > slots:  # the new batch queues behind the oldest
                self._complete(inflight.popleft())
                waited = True
            if launched is not None:  # on the device when a slot is free: now, or once the one before ended
                begins = max(launched.start, self.clock()) if waited else launched.start
                ratio = self._device_ratio.get(launched.width, 1.0)
                launched.free_at = begins + ratio * launched.device_s
            del launched  # let finished jobs' arrays go now, not when the next batch arrives

    def _top_up(self, batch: list[Work]) -> list[Work]:
        """A bucketed batch that is not full takes windows of its route's other buckets, all padded to the
        smallest shape that holds them (exact, as padding is for the model), where the cost model says the
        joined batch is no dearer than the two apart (a GPU batch below the size that fills the device
        costs the same however many of its pixels are padding) and that shape is at most MERGE_AREA
        times each joined bucket's area."""
        first = batch[0]
        route_key, shape = first.key
        limit = self._batch_limits.get(first.key, self.max_batch_tiles)
        cost = first.route.entry.cost
        if not first.route.entry.buckets or not first.route.tiled or len(batch) >= limit:
            return batch
        union, smallest, count = tuple(shape), shape[0] * shape[1], len(batch)

        def seconds(window: tuple[int, int], n: int) -> float:
            return cost.batch_curve(window[0] * window[1], limit)[n]

        def fits(key: tuple, joining: int) -> bool:
            nonlocal union, smallest, count
            if key[0] != route_key or len(key[1]) != 2:
                return False
            other = key[1]
            grown = (max(union[0], other[0]), max(union[1], other[1]))
            least = min(smallest, other[0] * other[1])
            if grown[0] * grown[1] > buckets.MERGE_AREA * least:
                return False
            if seconds(grown, count + joining) > seconds(union, count) + seconds(other, joining):
                return False
            union, smallest, count = grown, least, count + joining
            return True

        return batch + self._backlog.top_up(limit - len(batch), fits)

    def _device_seconds(self, items: list[Work]) -> float:
        """What the cost model expects a batch of these windows to take (at their shared shape)."""
        h, w = max(w.window[0] for w in items), max(w.window[1] for w in items)
        limit = max(self.max_batch_tiles, len(items))
        return items[0].route.entry.cost.batch_curve(h * w, limit)[len(items)]

    def _start(self, batch: list[Work], *, alone: bool = True) -> Launched | None:
        """Account for a collected batch, drop dead work, and launch the rest."""
        with self._lock:
            self._queued -= len(batch)
            for work in batch:  # one key a batch, and the buckets that topped it up
                route_key, shape = work.key
                shapes = self._queued_shapes.get(route_key, {})
                left = shapes.get(shape, 0) - 1
                if left > 0:
                    shapes[shape] = left
                else:
                    shapes.pop(shape, None)
            costs = [(w.rank, w.cost_s) for w in batch]
            cost_s = self._waits.started(costs, self.clock(), queue_empty=not self._queued)
            self._publish_queue_locked()
        launched = None
        try:
            live = self._live(batch)
            launched = self._launch(live, alone=alone) if live else None
        except Exception:  # never let one batch end the worker
            log.exception("batch handling failed")
            for job in {w.job for w in batch}:
                self._fail(job, RuntimeError("internal error while handling the batch"))
        if launched is None:  # dropped, failed, or run at once in halves: nothing of it is left on the device
            with self._lock:
                self._waits.finished(cost_s, self.clock())
        else:
            launched.cost_s = cost_s
        return launched

    def _live(self, batch: list[Work]) -> list[Work]:
        now = self.clock()
        live = []
        for work in batch:
            job = work.job
            # Client gone or deadline passed: drop its work before computing it.
            if job.cancelled:  # its waiter has already answered
                self.metrics.dropped_tiles.labels("cancelled").inc()
                job.finished = True
                continue
            if now > job.deadline:
                self.metrics.dropped_tiles.labels("deadline").inc()
                self._fail(job, DeadlineExceeded("the request waited in the queue past its deadline"))
                continue
            if job.finished:  # failed earlier in another batch
                continue
            live.append(work)
        return live

    def _launch(self, items: list[Work], *, alone: bool = True) -> Launched | None:
        """Cut and stack the windows and start them on the device (None: failed, or handled by splitting)."""
        route = items[0].route
        entry = route.entry
        start = self.clock()
        jobs = list(dict.fromkeys(w.job for w in items))
        for job in jobs:
            if job.started is None:
                job.started = start
                self.metrics.queue_wait.labels(entry.name).observe(start - job.enqueued)
        # One shape a batch: its bucket, which smaller buckets' windows topped it up to (see _top_up).
        window = (max(w.window[0] for w in items), max(w.window[1] for w in items))
        extra = sum(window[0] * window[1] - w.window[0] * w.window[1] for w in items)
        if extra:  # padding beyond the windows' own plans
            self.metrics.computed_pixels.labels(entry.name).inc(extra)
        windows = stack_windows([(w.job.pixels, w.tile) for w in items], window)
        size = route.size_for(window)
        valid = valid_sizes([w.tile for w in items], window)
        try:
            pending = self.runner.launch(
                entry.module, windows, precision=entry.precision, size=size, valid=valid, alone=alone
            )
        except Exception as e:
            self._batch_failed(items, jobs, e, split=True)
            return None
        return Launched(items, jobs, start, pending)

    def _batch_failed(self, items: list[Work], jobs: list[Job], e: Exception, *, split: bool) -> None:
        """Out of memory: split the batch and run the halves before failing anyone; else fail the batch."""
        entry = items[0].route.entry
        if is_oom(e):
            if self.pool.device.type == "cuda":
                torch.cuda.empty_cache()
            if split and len(items) > 1:
                self.metrics.batch_failures.labels("oom_split").inc()
                half = len(items) // 2
                for part in (items[:half], items[half:]):
                    launched = self._launch(part)
                    if launched is not None:
                        self._complete(launched)
                return
            self.metrics.batch_failures.labels("oom").inc()
            error: Exception = DeviceOutOfMemory("one tile does not fit in device memory")
        else:
            self.metrics.batch_failures.labels("error").inc()
            ids = ",".join(job.request_id for job in jobs)
            log.error("batch of %d %s tiles failed", len(items), entry.name, exc_info=e, extra={"request_id": ids})
            error = e
        for job in jobs:
            self._fail(job, error)

    def _complete(self, launched: Launched) -> None:
        """Wait for a launched batch, paste each window's core into its request, settle finished requests."""
        items, jobs = launched.items, launched.jobs
        route = items[0].route
        try:
            results = launched.pending.wait()
        except Exception as e:
            launched.pending.release()
            with self._lock:
                self._waits.finished(launched.cost_s, self.clock())
            self._batch_failed(items, jobs, e, split=False)
            return
        done = self.clock()
        # This batch's own turn: on CUDA it may have queued behind the previous one.
        turn_start = max(launched.start, self._last_done)
        elapsed = done - turn_start
        self._last_done = done
        self.metrics.batch_compute.labels(route.entry.name).observe(elapsed)
        device_s = launched.pending.device_s
        # A batch on one of several lanes keeps that share of the device busy.
        self.metrics.device_busy.inc((elapsed if device_s is None else device_s) * launched.width / self.runner.slots)
        if device_s and launched.device_s:  # how the device's own times run against the cost model's
            old = self._device_ratio.get(launched.width, 1.0)
            ratio = min(10.0, max(0.1, device_s / launched.device_s))
            self._device_ratio[launched.width] = old + 0.2 * (ratio - old)
        self.metrics.batch_tiles.labels(route.entry.name).observe(len(items))
        for job in jobs:
            job.compute_s += elapsed
        answered: list[Job] = []
        try:
            for work, result in zip(items, results, strict=True):
                job = work.job
                if job.finished:
                    continue
                if job.blend is not None and work.tile is not None:
                    job.blend.add(work.tile, result)
                else:
                    place(job.out, work.tile, result, route.scale)
                job.remaining -= 1
                if job.remaining == 0 and job.blend is not None:
                    job.blend.finish(job.out)
                    job.blend = None
                if job.remaining == 0 and job.later:
                    try:
                        self._next_stage(job)
                    except Exception as e:  # e.g. no memory for the next output: this job only
                        self._fail(job, e)
                elif job.remaining == 0:
                    job.finished = True
                    job.computed = self.clock()
                    job.pixels = job.pixels[:0, :0]  # the input is not needed any more
                    answered.append(job)
        finally:
            launched.pending.release()
            # The worker's whole turn (stack, model, paste) is what the queue waits for. Accounted before the
            # answers go out: a client that sends again at once must not find this batch still ahead of it.
            with self._lock:
                self._waits.calibrate(route.key, sum(w.planned_s for w in items), self.clock() - turn_start)
                self._waits.finished(launched.cost_s, done)
            for job in answered:
                job.loop.call_soon_threadsafe(_settle, job.future, job.out, None)

    def _fail(self, job: Job, error: BaseException) -> None:
        if not job.finished:
            job.finished = True
            job.loop.call_soon_threadsafe(_settle, job.future, None, error)


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the waiter gave up (timeout, disconnect)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _pixels(size: tuple[int, int]) -> int:
    return int(size[0]) * int(size[1])
