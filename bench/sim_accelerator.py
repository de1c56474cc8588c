"""A simulated accelerator: a device that costs time but no host CPU, for the bench and tests.

No GPU has been lent to this project, yet what a GPU server does with its host
(batching across requests, keeping the device fed while it decodes, pastes and
encodes) has to be measured. This device stands in for one:

* its output is correct in shape and cheap: nearest-neighbour copies of the input
  pixels at the model's scale (or the real model's output on the CPU with
  ``exact=True``, which then costs host CPU as well);
* each batch then holds until a GPU-shaped time has passed: a fixed cost per batch
  (kernel launches, synchronisation) plus the model's FLOPs at the profile's
  effective rate plus the bytes over the host link. A batch of fewer LR pixels than
  fill the device pays for its idle multiprocessors: its FLOPs are counted as if it
  had ``full_px`` pixels. Batches queue on the device one
  after another, as kernels on one stream do, and the worker waits in ``time.sleep``,
  which releases the GIL as a CUDA synchronisation does.

It plugs in where the engine's :class:`~srserve.service.batch_runner.BatchRunner`
would (``launch`` -> ``wait`` -> ``release``, overlapping like CUDA), through
``bench/simserve.py`` only: the service never imports ``bench``, so no production
setting reaches it.

The H200 constants come from published figures, not from a measurement (none
exists yet; ``bench/device_check.sh`` prints the real ones beside these when a
device is lent):

* 494 TFLOP/s dense TF32 tensor-core rate (PyTorch runs fp32 convolutions as TF32
  on cuDNN by default), 989 TFLOP/s dense fp16/bf16; small super-resolution
  convolutions (32-64 channels) reach about a quarter of it;
* about 60 us per batch: a few tens of kernel launches at ~2-5 us and a
  stream synchronisation;
* 50 GB/s pinned host-to-device and back (PCIe Gen5 x16, about 80% of 64 GB/s);
* 65536 LR pixels (a 256x256 window) to fill it: an estimate, not a published figure.
  cuDNN's implicit-GEMM kernels give a thread block 64-128 output pixels of a 32-64
  channel layer; 132 SMs holding a few blocks each take 30-60 thousand pixels per wave,
  and a few waves hide the tail of the last.

``flops_scale`` charges a multiple of the model's FLOPs: a stand-in for a heavier
network with the same receptive field and padding behaviour (an ESRGAN-class
RRDBNet is about 370x ESPCN's FLOPs per pixel), for loads where the device, not the
host, is the bound. What it returns is still the model's own (or nearest) pixels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from srserve.service.inference import predict

#: The side of the probe a module's FLOPs per LR pixel and its scale are read from.
PROBE = 32


@dataclass(frozen=True)
class Profile:
    name: str
    fp32_flops: float  # effective FLOP/s of the models' convolutions in fp32 (TF32)
    half_flops: float  # the same in fp16/bf16
    per_batch_s: float
    link_bytes_s: float
    full_px: int  # LR pixels per batch that fill the device; a smaller batch computes as slowly as this many
    source: str


H200 = Profile(
    "h200",
    fp32_flops=0.25 * 494e12,
    half_flops=0.25 * 989e12,
    per_batch_s=60e-6,
    link_bytes_s=50e9,
    full_px=1 << 16,
    source="published H200 SXM figures (494/989 TFLOP/s dense TF32/fp16, PCIe Gen5), a quarter of peak; "
    "the pixels that fill it estimated from its 132 SMs; not measured",
)
PROFILES = {p.name: p for p in (H200,)}


@dataclass
class SimPending:
    """A batch on the simulated device: its pixels once ``done_at`` has passed."""

    result: np.ndarray
    done_at: float
    device_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    width: int = 1  # one stream: a batch takes it whole

    def wait(self) -> np.ndarray:
        left = self.done_at - self.clock()
        if left > 0:
            self.sleep(left)
        return self.result

    def done(self) -> bool:
        return self.clock() >= self.done_at

    def release(self) -> None:
        pass


@dataclass(frozen=True)
class _Shape:
    flops_per_px: float  # per LR pixel
    scale: float


@dataclass
class SimulatedAccelerator:
    """Stands in for the engine's batch runner; see the module docstring."""

    profile: Profile = H200
    exact: bool = False
    flops_scale: float = 1.0  # charge this many times the model's FLOPs (a heavier network's stand-in)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    overlaps: bool = True  # launch returns at once; the worker prepares the next batch meanwhile
    slots: int = 1  # one stream: batches queue on it
    busy_s: float = 0.0  # simulated device seconds so far
    _free_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _shapes: dict[int, _Shape] = field(default_factory=dict)

    def model_shape(self, module: nn.Module, size: tuple[int, int] | None) -> _Shape:
        known = self._shapes.get(id(module))
        if known is None:
            x = torch.rand(1, 3, PROBE, PROBE)
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                out = module(x, (2 * PROBE, 2 * PROBE)) if size is not None else module(x)
            known = self._shapes[id(module)] = _Shape(counter.get_total_flops() / PROBE**2, out.shape[-1] / PROBE)
        return known

    def seconds(self, module: nn.Module, windows: np.ndarray, out_bytes: int, *, precision: str, size=None) -> float:
        """What the profile's device would take for this batch."""
        shape = self.model_shape(module, size)
        rate = self.profile.fp32_flops if precision == "fp32" else self.profile.half_flops
        pixels = windows.shape[0] * windows.shape[1] * windows.shape[2]
        occupied = max(pixels, self.profile.full_px)  # a batch too small to fill the device leaves SMs idle
        return (
            self.profile.per_batch_s
            + self.flops_scale * shape.flops_per_px * occupied / rate
            + (windows.nbytes + out_bytes) / self.profile.link_bytes_s
        )

    def launch(
        self,
        module: nn.Module,
        windows: np.ndarray,
        *,
        precision: str = "fp32",
        size: tuple[int, int] | None = None,
        valid: Sequence[tuple[int, int]] | None = None,
        alone: bool = True,  # nothing else running: no matter to a device that runs one batch at a time
    ) -> SimPending:
        called = self.clock()  # the device starts then; the host's copy of the answer overlaps it, as a D2H would
        if self.exact:
            out = predict(module, windows, device=self.device, precision="fp32", size=size, valid=valid)
        else:
            out = self._nearest(windows, size or self._out_size(module, windows, size))
        seconds = self.seconds(module, windows, out.nbytes, precision=precision, size=size)
        with self._lock:
            start = max(called, self._free_at)
            self._free_at = start + seconds
            self.busy_s += seconds
            done_at = self._free_at
        return SimPending(out, done_at, seconds, self.clock, self.sleep)

    def _out_size(self, module: nn.Module, windows: np.ndarray, size: tuple[int, int] | None) -> tuple[int, int]:
        scale = self.model_shape(module, size).scale
        return round(windows.shape[1] * scale), round(windows.shape[2] * scale)

    @staticmethod
    def _nearest(windows: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Nearest-neighbour pixels of ``size``: the right shape and photo-like values (what the encoder
        gets matters: a flat answer would encode several times faster than a real one).

        Host work a real device does not add (about 1.3 ms per output megapixel here): each pixel is
        copied as one 3-byte item, 2x faster than numpy's repeat over channels."""
        n, h, w, c = windows.shape
        pixels = np.ascontiguousarray(windows).view(np.dtype(f"V{c * windows.itemsize}"))[..., 0]
        if size[0] % h == 0 and size[1] % w == 0:
            out = pixels.repeat(size[1] // w, axis=2).repeat(size[0] // h, axis=1)
        else:
            out = pixels[:, np.arange(size[0]) * h // size[0]][:, :, np.arange(size[1]) * w // size[1]]
        return out[..., None].view(windows.dtype).reshape(n, size[0], size[1], c)
