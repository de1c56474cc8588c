"""JPEG decode and encode on the GPU (nvJPEG through ``torchvision.io``), batched across requests.

Off by default (``SR_GPU_JPEG``): on a GPU host the CPU bounds throughput and
JPEG is the one common format with a GPU codec, but whether it pays against
libjpeg-turbo on the host's cores (about 4 core-ms per MP to decode, 3 to encode
here) is for ``bench/gpu_jpeg.py`` on the device to say (``bench/device_check.sh``).
nvJPEG's pixels are not libjpeg-turbo's bit for bit (its IDCT and chroma upsampling
differ by a level or so), which is why this is a choice and not the default path.
PNG and WebP have no GPU encoder; they stay on the CPU codecs.

Each I/O thread's call waits on a future while one thread gathers the calls of all
requests (the collector the engine uses, :func:`~srserve.service.batching.collect_batch`)
and hands them to nvJPEG as one list: ``decode_jpeg`` and ``encode_jpeg`` take
lists and run them as one batched call. A batch that fails is retried one image
at a time, so one bad file fails only its own request.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from srserve.service.batching import STOP, Backlog, Message, collect_batch

#: Most images in one nvJPEG call, and the longest a call waits for company.
MAX_BATCH = 32
MAX_DELAY_S = 0.001


class GpuJpegUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Backend:
    """Batched codec calls: ``decode(datas, grey)`` -> pixels, ``encode(arrays, quality)`` -> files."""

    decode: Callable[[Sequence[bytes], bool], list[np.ndarray]]
    encode: Callable[[Sequence[np.ndarray], int], list[bytes]]


def nvjpeg(device: torch.device) -> Backend:
    """torchvision's nvJPEG on ``device``; raises :class:`GpuJpegUnavailable` where it cannot run."""
    if device.type != "cuda":
        raise GpuJpegUnavailable(f"SR_GPU_JPEG needs a CUDA device; this server runs on {device}")
    try:
        from torchvision import io as tvio
    except Exception as e:  # not installed, or built for another torch
        raise GpuJpegUnavailable(f"SR_GPU_JPEG needs torchvision with CUDA: {type(e).__name__}: {e}") from None

    def decode(datas: Sequence[bytes], grey: bool) -> list[np.ndarray]:
        encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        mode = tvio.ImageReadMode.GRAY if grey else tvio.ImageReadMode.RGB
        images = tvio.decode_jpeg(encoded, mode=mode, device=device)  # [(C, H, W)] on the device
        return [im.permute(1, 2, 0).cpu().numpy() for im in images]

    def encode(arrays: Sequence[np.ndarray], quality: int) -> list[bytes]:
        images = [torch.from_numpy(np.ascontiguousarray(a)).to(device).permute(2, 0, 1).contiguous() for a in arrays]
        return [data.cpu().numpy().tobytes() for data in tvio.encode_jpeg(images, quality=quality)]

    return Backend(decode, encode)


@dataclass(frozen=True)
class _Call:
    op: str  # "decode" | "encode"
    arg: bool | int  # grey (decode) or quality (encode): one value per batch
    payload: bytes | np.ndarray
    future: Future


class GpuJpeg:
    """JPEG through ``backend`` (default: nvJPEG on ``device``), the calls of all threads batched."""

    def __init__(
        self,
        device: torch.device,
        *,
        backend: Backend | None = None,
        max_batch: int = MAX_BATCH,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        self.device = device
        self.backend = backend or nvjpeg(device)
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # images per codec call, the latest; tests and bench
        self._source: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="srserve-gpu-jpeg", daemon=True)
        self._thread.start()

    def decode(self, data: bytes, grey: bool) -> np.ndarray:
        """``(H, W, 3)`` RGB or ``(H, W)`` grey uint8 on the host (orientation is the caller's)."""
        out = self._call("decode", grey, data)
        return out[..., 0] if grey and out.ndim == 3 else out

    def encode(self, pixels: np.ndarray, quality: int) -> bytes:
        """``(H, W, 3)`` or ``(H, W)`` uint8 to a baseline JPEG."""
        return self._call("encode", quality, pixels[..., None] if pixels.ndim == 2 else pixels)

    def close(self) -> None:
        self._source.put(STOP)
        self._thread.join()

    def _call(self, op: str, arg: bool | int, payload: bytes | np.ndarray) -> Any:  # pixels or a file
        call = _Call(op, arg, payload, Future())
        self._source.put(Message([((op, arg), call)]))
        return call.future.result()

    def _run(self) -> None:
        backlog: Backlog[_Call] = Backlog()
        while True:
            batch = collect_batch(self._source, backlog, max_items=self.max_batch, max_delay=self.max_delay_s)
            if batch is None:
                return
            self.batch_sizes.append(len(batch))
            run = self.backend.decode if batch[0].op == "decode" else self.backend.encode
            try:
                results = run([c.payload for c in batch], batch[0].arg)  # type: ignore[arg-type]
            except Exception:  # one bad file must not fail the others: each alone
                results = None
            for i, call in enumerate(batch):
                try:
                    out = results[i] if results is not None else run([call.payload], call.arg)[0]  # type: ignore[arg-type]
                    call.future.set_result(out)
                except Exception as e:
                    call.future.set_exception(e)
