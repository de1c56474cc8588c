"""What the engine queues and tracks: a request's job (and the later stages of a chained one), its
windows of work, a launched batch, and the errors a waiting request can get."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from srserve.service.admission import Prediction
from srserve.service.batch_runner import Pending
from srserve.service.blend import Blend
from srserve.service.planner import Plan
from srserve.service.request_context import REQUEST_ID
from srserve.service.routing import Route
from srserve.service.tiling import Tile


class DeadlineExceeded(Exception):
    """The request was still waiting when its deadline passed (504)."""


class DeviceOutOfMemory(Exception):
    """A single tile did not fit on the device even alone (503)."""


@dataclass(eq=False)
class Stage:
    """A later model of a chained request (restore, then upscale): planned and admitted up front,
    queued by the worker when the stage before it is done."""

    route: Route
    plan: Plan
    factor: float  # the route's calibration at admission


@dataclass(eq=False)
class Job:
    """One request's work: its LR pixels, its output, and how many tiles remain (of this stage)."""

    route: Route
    pixels: np.ndarray
    out: np.ndarray | Image.Image
    plan: Plan
    remaining: int
    deadline: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    rank: int = 0
    into_image: bool = False  # the last stage stitches into a Pillow image
    later: list[Stage] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)  # every stage's, for the X-Tile-Plan header
    enqueued: float = field(default_factory=time.monotonic)  # on the engine's clock, as are the times below
    first_key: tuple = ()  # its first route's key
    calibration: float = 1.0  # that route's calibration when it was admitted
    admitted: float | None = None  # when admission let it in (before its decode), if not when enqueued
    started: float | None = None  # when its first tile's batch began
    computed: float | None = None  # when its last window was pasted
    prediction: Prediction = field(default_factory=lambda: Prediction(0.0, 0.0, 1.0, 0.0))  # admission's
    compute_s: float = 0.0  # device time of the batches it was part of
    request_id: str = field(default_factory=REQUEST_ID.get)  # for the worker's log lines
    blend: Blend | None = None  # this stage's windows are blended, not pasted (service/blend.py)
    cancelled: bool = False  # set from the loop: client gone or deadline passed
    finished: bool = False  # set by the worker: result or error delivered

    @property
    def queue_s(self) -> float:
        return (self.started if self.started is not None else self.enqueued) - self.enqueued

    def cancel(self) -> None:
        self.cancelled = True

    def receipt(self) -> Receipt:
        """What admission needs to learn from this job's answer, without holding its pixels."""
        h, w = self.route.out_size
        admitted = self.enqueued if self.admitted is None else self.admitted
        return Receipt(
            self.rank, admitted, self.computed, self.prediction, int(h) * int(w), self.first_key, self.calibration
        )


@dataclass(frozen=True)
class Receipt:
    rank: int
    admitted: float  # the times its prediction was made from
    computed: float | None
    prediction: Prediction
    out_pixels: int
    key: tuple = ()  # the first route's, whose calibration it was predicted with
    calibration: float = 1.0  # that calibration then


@dataclass(eq=False)
class Launched:
    """A batch on its way through the device."""

    items: list[Work]
    jobs: list[Job]
    start: float
    pending: Pending
    cost_s: float = 0.0  # its predicted seconds, for the admission's account of the device
    device_s: float = 0.0  # the cost model's seconds for it on the device (before calibration)
    width: int = 1  # the runner's slots it takes (all of a CPU's lanes when it ran alone)
    free_at: float = 0.0  # when it should be done, by the cost model and the device's recent ratio to it


@dataclass(eq=False)
class Work:
    job: Job
    route: Route  # the job's route when this window was queued (a chained job moves on)
    tile: Tile | None  # None: the whole image in one piece
    planned_s: float  # the cost model's prediction for this window
    cost_s: float  # the same, calibrated when queued: what it adds to the wait
    rank: int
    window: tuple[int, int] = (0, 0)  # the shape it runs at: its bucket when padded
    key: tuple = ()  # the batch key it is queued under


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
