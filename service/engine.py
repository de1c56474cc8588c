"""The worker that owns a device: tiles from every queued request, batched.

The event loop only plans tiles and enqueues them (``submit``); one thread per
device collects batches (``collect_batch``), runs them, pastes each tile's core
into its request's output, and resolves the request's future on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from service.batching import STOP, Backlog, collect_batch
from service.inference import predict
from service.metrics import Metrics
from service.model_pool import ModelPool, Route
from service.tiling import Tile, cut, paste, plan

log = logging.getLogger("srserve.engine")


class QueueFull(Exception):
    """More tiles are queued than the server accepts; retry later (503)."""


class DeadlineExceeded(Exception):
    """The request was still waiting when its deadline passed (504)."""


class DeviceOutOfMemory(Exception):
    """A single tile did not fit on the device even alone (503)."""


@dataclass(eq=False)
class Job:
    """One request's work: its LR pixels, its output, and how many tiles remain."""

    route: Route
    pixels: np.ndarray
    out: np.ndarray
    remaining: int
    deadline: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None  # when its first tile's batch began
    compute_s: float = 0.0  # device time of the batches it was part of
    cancelled: bool = False  # set from the loop: client gone or deadline passed
    finished: bool = False  # set by the worker: result or error delivered

    @property
    def queue_s(self) -> float:
        return (self.started or time.monotonic()) - self.enqueued

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class Work:
    job: Job
    tile: Tile | None  # None: the whole image in one piece


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


class Engine:
    """Owns ``pool``'s device; batches tiles across requests.

    Args:
        pool: the loaded models.
        metrics: where batch, queue and memory figures go.
        max_batch_tiles: most tiles in one batch.
        max_batch_delay_s: longest wait for a batch to fill after its first tile.
        max_queue_tiles: queued tiles beyond which ``submit`` raises :class:`QueueFull`.
    """

    def __init__(
        self,
        pool: ModelPool,
        metrics: Metrics,
        *,
        max_batch_tiles: int,
        max_batch_delay_s: float,
        max_queue_tiles: int,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.max_batch_tiles = max_batch_tiles
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_tiles = max_queue_tiles
        self._source: queue.Queue = queue.Queue()
        self._backlog: Backlog[Work] = Backlog()
        self._queued = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"srserve-worker-{pool.device}", daemon=True)
        metrics.queue_capacity.set(max_queue_tiles)

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

    def tiles_for(self, route: Route, height: int, width: int) -> list[Tile] | list[None]:
        if not route.tiled:
            return [None]
        return plan(height, width, self.pool.window, route.entry.radius)

    def submit(self, route: Route, pixels: np.ndarray, deadline: float) -> Job:
        """Queue one request; raises :class:`QueueFull` when it does not fit."""
        h, w = pixels.shape[:2]
        tiles = self.tiles_for(route, h, w)
        with self._lock:
            # A request larger than the whole queue is still admitted into an empty one.
            if self._queued and self._queued + len(tiles) > self.max_queue_tiles:
                raise QueueFull(f"{self._queued} tiles queued; this request needs {len(tiles)} more")
            self._queued += len(tiles)
        self.metrics.queued_tiles.set(self._queued)
        loop = asyncio.get_running_loop()
        out = np.empty((*route.out_size, 3), dtype=pixels.dtype)
        job = Job(route, pixels, out, len(tiles), deadline, loop.create_future(), loop)
        items = []
        for t in tiles:
            shape = t.shape if t is not None else (h, w, route.size_arg)
            items.append(((route.key, shape), Work(job, t)))
        self._source.put(items)
        return job

    # -- worker side -----------------------------------------------------
    def warm_up(self) -> None:
        """Run each learned model once at its tile shape (CUDA kernels, allocator, autotuning)."""
        for entry in self.pool.entries():
            side = self.pool.window
            sizes = {1, self.max_batch_tiles} if self.pool.device.type == "cuda" else {1}
            for n in sorted(sizes):
                windows = np.zeros((n, side, side, 3), dtype=np.uint8)
                predict(entry.module, windows, device=self.pool.device, precision=entry.precision)
        if self.pool.device.type == "cuda":
            torch.cuda.synchronize(self.pool.device)

    def _run(self) -> None:
        while True:
            batch = collect_batch(
                self._source, self._backlog, max_items=self.max_batch_tiles, max_delay=self.max_batch_delay_s
            )
            if batch is None:
                return
            with self._lock:
                self._queued -= len(batch)
            self.metrics.queued_tiles.set(self._queued)
            try:
                self._process(batch)
            except Exception:  # never let one batch end the worker
                log.exception("batch handling failed")
                for job in {w.job for w in batch}:
                    self._fail(job, RuntimeError("internal error while handling the batch"))

    def _process(self, batch: list[Work]) -> None:
        now = time.monotonic()
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
        if live:
            self._compute(live)

    def _compute(self, items: list[Work]) -> None:
        route = items[0].job.route
        entry = route.entry
        start = time.monotonic()
        jobs = list(dict.fromkeys(w.job for w in items))
        for job in jobs:
            if job.started is None:
                job.started = start
                self.metrics.queue_wait.labels(entry.name).observe(job.queue_s)
        windows = np.stack([cut(w.job.pixels, w.tile) if w.tile is not None else w.job.pixels for w in items])
        size = route.size_for(windows.shape[1:3])
        try:
            results = predict(entry.module, windows, device=self.pool.device, precision=entry.precision, size=size)
        except Exception as e:
            if is_oom(e):
                if self.pool.device.type == "cuda":
                    torch.cuda.empty_cache()
                if len(items) > 1:  # split and retry before any request fails
                    self.metrics.batch_failures.labels("oom_split").inc()
                    half = len(items) // 2
                    self._compute(items[:half])
                    self._compute(items[half:])
                    return
                self.metrics.batch_failures.labels("oom").inc()
                error: Exception = DeviceOutOfMemory("one tile does not fit in device memory")
            else:
                self.metrics.batch_failures.labels("error").inc()
                log.exception("batch of %d %s tiles failed", len(items), entry.name)
                error = e
            for job in jobs:
                self._fail(job, error)
            return
        elapsed = time.monotonic() - start
        self.metrics.batch_compute.labels(entry.name).observe(elapsed)
        self.metrics.batch_tiles.labels(entry.name).observe(len(items))
        for job in jobs:
            job.compute_s += elapsed
        for work, result in zip(items, results, strict=True):
            job = work.job
            if job.finished:
                continue
            if work.tile is None:
                job.out[...] = result
            else:
                paste(job.out, work.tile, result, route.scale)
            job.remaining -= 1
            if job.remaining == 0:
                job.finished = True
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
