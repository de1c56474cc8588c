"""Per-app state: settings, metrics, models and the worker, plus readiness.

One instance lives on ``app.state.runtime``; nothing here is module-global.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

from srserve.models.device import resolve_device
from srserve.service.batch_runner import Runner
from srserve.service.cpu_lanes import CpuLanes
from srserve.service.engine import Engine
from srserve.service.fast_codecs import Codecs
from srserve.service.gpu_jpeg import GpuJpeg
from srserve.service.metrics import Metrics
from srserve.service.model_pool import ModelPool
from srserve.service.priority import lower_this_thread
from srserve.service.retries import RetryLedger
from srserve.service.settings import Settings
from srserve.service.warmup import warm

log = logging.getLogger("srserve")


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Runtime:
    """Everything one running app owns."""

    def __init__(self, settings: Settings, runner: Runner | None = None) -> None:
        """``runner``: runs batches in place of the device (the bench's simulated accelerator)."""
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.metrics = Metrics()
        self.metrics.watch_device(lambda: self.device)
        self.pool = ModelPool(
            device=self.device,
            weights_dir=settings.weights_dir,
            enabled=settings.models,
            window=settings.tile_size,
            precision=dict(settings.precision),
            auto_precision=settings.auto_precision,
            models_dir=settings.models_dir,
            skip_bad_models=settings.skip_bad_models,
            whole_max_pixels=settings.whole_max_pixels,
        )
        # Lanes only where batches run on the host; a GPU batch is one launch.
        self.lanes = (
            CpuLanes(settings.cpu_lanes, nice=settings.worker_nice)
            if self.device.type == "cpu" and settings.cpu_lanes > 1 and runner is None
            else None
        )
        self.engine = Engine(
            self.pool,
            self.metrics,
            max_batch_tiles=settings.max_batch_tiles,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
            max_queue_tiles=settings.max_queue_tiles,
            max_queue_wait_s=settings.max_queue_wait_s,
            min_retry_after_s=settings.retry_after_s,
            thread_nice=settings.worker_nice,
            lanes=self.lanes,
            runner=runner,
            use_buckets=settings.buckets,
        )
        self.codecs = Codecs(
            png_encoder=settings.png_encoder,
            io_threads=settings.io_threads,
            on_fallback=lambda op: self.metrics.codec_fallbacks.labels(op).inc(),
            gpu_jpeg=GpuJpeg(self.device) if settings.gpu_jpeg else None,  # raises where it cannot run
        )
        self.retries = RetryLedger()  # refused uploads, so that early resends are held (see retries)
        self.io = ThreadPoolExecutor(
            settings.io_threads,
            thread_name_prefix="srserve-io",
            initializer=lower_this_thread,
            initargs=(settings.worker_nice,),
        )
        self.phase = Phase.STARTING
        self.error: str | None = None

    def load(self) -> None:
        """Load and warm every model, start the worker, then report ready (runs in a thread)."""
        lower_this_thread(self.settings.worker_nice)  # measuring the models must not hold up /healthz
        try:
            self.pool.load()
            if self.settings.warmup:
                self.engine.warm_up()
            self.engine.start()
            if self.settings.warmup:  # before ready: the first requests are as fast as the rest
                warm(self.engine, self.io, self.settings.io_threads, self.settings.png_compress_level, self.codecs)
        except Exception as e:
            self.phase, self.error = Phase.FAILED, f"{type(e).__name__}: {e}"
            log.exception("start-up failed")
            return
        if self.phase is Phase.STARTING:
            self.phase = Phase.READY
            self.metrics.ready.set(1)
        log.info("ready on %s with %s", self.device, [f"{e.name}_x{int(e.scale)}" for e in self.pool.entries()])

    def begin_drain(self) -> None:
        self.phase = Phase.DRAINING
        self.metrics.ready.set(0)

    def close(self) -> None:
        self.engine.stop(timeout=self.settings.request_timeout_s)
        self.io.shutdown(wait=True)
        if self.lanes is not None:
            self.lanes.close()
        if self.codecs.gpu_jpeg is not None:
            self.codecs.gpu_jpeg.close()
