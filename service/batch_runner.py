"""Running batches on the device, with host work overlapping device work on CUDA.

On a CPU a batch run alone runs at once, on every core (its windows side by side
when it has several); under load each window of a batch goes to the next free lane,
launched on a lane thread while the worker collects the next
(:mod:`srserve.service.cpu_lanes`). On CUDA, :meth:`BatchRunner.launch`
copies the windows into a reused pinned host buffer, queues the upload, the
model and the download on a side stream and returns at once; the worker then
cuts, stacks and launches the next batch while these kernels run, and only
waits (:meth:`Pending.wait`) when it needs the pixels. Pinned buffers are kept
per shape and reused, so no batch pays for page-locking memory again.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from srserve.models.imageops import from_float, to_float
from srserve.models.resize import Interpolate
from srserve.service.cpu_lanes import CpuLanes
from srserve.service.inference import AUTOCAST_DTYPES, predict, run_masked
from srserve.service.pixels import max_value

#: Pinned buffers kept for reuse, by (shape, dtype): enough for the shapes a server sees at once.
MAX_PINNED_KEYS = 32


class Launch(Protocol):
    """A batch on its way: ``wait`` gives its pixels; ``device_s`` the device's own time for it, once known;
    ``width`` the runner's slots it takes (CPU lanes)."""

    device_s: float | None
    width: int

    def wait(self) -> np.ndarray: ...

    def done(self) -> bool: ...

    def release(self) -> None: ...


class Runner(Protocol):
    """What the engine runs batches with: :class:`BatchRunner`, or a stand-in device (the bench's simulator)."""

    overlaps: bool  # launch returns before the batch is done: the worker prepares the next one meanwhile
    slots: int  # batches it runs at once (CPU lanes); the worker prepares one more while all run

    def launch(
        self,
        module: nn.Module,
        windows: np.ndarray,
        *,
        precision: str = "fp32",
        size: tuple[int, int] | None = None,
        valid: Sequence[tuple[int, int]] | None = None,
        alone: bool = True,
    ) -> Launch: ...


@dataclass(eq=False)
class Pending:
    """A launched batch. ``wait`` gives its ``(N, H, W, 3)`` pixels, valid until ``release``."""

    result: np.ndarray | None = None  # CPU: computed already
    futures: list[Future] = field(default_factory=list)  # CPU lanes: ``(pixels, seconds)`` of each part, in order
    device_s: float | None = None  # the batch's own time on the device (CUDA: between its events)
    width: int = 1  # lanes it takes
    started: torch.cuda.Event | None = None
    event: torch.cuda.Event | None = None
    host_out: torch.Tensor | None = None
    out_dtype: np.dtype | None = None
    buffers: list[torch.Tensor] = field(default_factory=list)
    runner: BatchRunner | None = None

    def done(self) -> bool:
        if self.result is not None:
            return True
        if self.futures:
            return all(f.done() for f in self.futures)
        return self.event is not None and self.event.query()

    def wait(self) -> np.ndarray:
        if self.result is None and self.futures:
            parts = [f.result() for f in self.futures]
            self.result = parts[0][0] if len(parts) == 1 else np.concatenate([p for p, _ in parts])
            self.device_s = max(s for _, s in parts)  # side by side, as warm-up timed a batch of that many
        if self.result is None:
            assert self.event is not None and self.host_out is not None
            self.event.synchronize()
            if self.started is not None:
                self.device_s = self.started.elapsed_time(self.event) / 1000
            values = self.host_out.numpy()
            self.result = values if values.dtype == self.out_dtype else values.astype(self.out_dtype)
        return self.result

    def release(self) -> None:
        """Hand the pinned buffers back for the next batches (the pixels from ``wait`` are then invalid)."""
        if self.runner is not None:
            self.runner.give_back(self.buffers)
        self.buffers, self.runner = [], None


class BatchRunner:
    """Launches batches on ``device``: asynchronous (depth one) on CUDA; on a CPU with ``lanes``, one
    batch per lane (a batch run alone synchronously, on every core); without lanes, synchronous."""

    def __init__(self, device: torch.device, lanes: CpuLanes | None = None) -> None:
        self.device = device
        self.lanes = lanes if device.type == "cpu" else None
        self.overlaps = device.type == "cuda" or self.lanes is not None
        self.slots = self.lanes.lanes if self.lanes is not None else 1
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._free: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()

    def _take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (shape, dtype)
        free = self._free.get(key)
        if free:
            self._free.move_to_end(key)
            return free.pop()
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def give_back(self, buffers: list[torch.Tensor]) -> None:
        for b in buffers:
            key = (tuple(b.shape), b.dtype)
            self._free.setdefault(key, []).append(b)
            self._free.move_to_end(key)
        while len(self._free) > MAX_PINNED_KEYS:  # shapes not seen lately give their memory back
            self._free.popitem(last=False)

    def launch(
        self,
        module: nn.Module,
        windows: np.ndarray,
        *,
        precision: str = "fp32",
        size: tuple[int, int] | None = None,
        valid: Sequence[tuple[int, int]] | None = None,
        alone: bool = True,
    ) -> Pending:
        """Start ``windows`` through ``module``; the returned :class:`Pending` yields the pixels.

        ``valid``: the unpadded size of each window padded to a bucket (see ``inference.predict``).
        ``alone``: nothing else is running or waiting; on a CPU it then runs now, on every core, else on a lane.
        """
        if self._stream is None:

            def run(part: np.ndarray) -> np.ndarray:
                return predict(module, part, device=self.device, precision=precision, size=size, valid=valid)

            # A padded batch runs in one call, never beside another: its masks are per batch, on the module itself.
            # So does a network that rewrites its own weights as it runs (models/community/net.py): here, in the
            # worker, on every core, as the whole image would run.
            beside = valid is None and getattr(module, "reentrant", True)
            if self.lanes is not None and not alone and beside:
                if isinstance(module, Interpolate):  # a resize costs less than a lane's hand-off per window
                    return Pending(futures=[self.lanes.submit(run, windows)])
                # A network's windows one a lane, as warm-up timed a batch (side by side): on one lane its first
                # windows would wait for its last, and two 256x256 windows' ESPCN activations (32 MiB) reach glibc's
                # largest mmap threshold, so each pass would fault them in afresh (5,000-10,000 faults an image).
                parts = [windows[i : i + 1] for i in range(len(windows))]
                width = min(len(parts), self.lanes.lanes)
                return Pending(futures=[self.lanes.submit(run, part) for part in parts], width=width)

            split = self.lanes is not None and len(windows) > 1 and beside
            lanes = self.lanes if split else None
            start = time.perf_counter()
            result = lanes.map(run, windows) if lanes is not None else run(windows)
            return Pending(result=result, device_s=time.perf_counter() - start)
        out_dtype, peak = windows.dtype, max_value(windows.dtype)
        if windows.dtype == np.uint16:  # few device kernels take uint16; int32 holds it exactly
            windows = windows.astype(np.int32)
        host_in = self._take(windows.shape, torch.from_numpy(windows[:0]).dtype)
        np.copyto(host_in.numpy(), windows)
        dtype = AUTOCAST_DTYPES[precision]
        autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
        started = torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self._stream), torch.inference_mode():
            started.record(self._stream)
            batch = to_float(host_in.to(self.device, non_blocking=True), peak)
            with autocast, run_masked(module, valid, windows.shape[1:3]):
                out = module(batch, size) if size is not None else module(batch)
            values = from_float(out.float(), peak).to(torch.uint8 if peak == 255 else torch.int32)
            host_out = self._take(tuple(values.shape), values.dtype)
            host_out.copy_(values, non_blocking=True)
            event = torch.cuda.Event(enable_timing=True)
            event.record(self._stream)
        return Pending(
            started=started,
            event=event,
            host_out=host_out,
            out_dtype=out_dtype,
            buffers=[host_in, host_out],
            runner=self,
        )
