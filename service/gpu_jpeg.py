"""JPEG decode and encode on the GPU (nvJPEG through ``torchvision.io``), for a CUDA server.

Off by default (``SR_GPU_JPEG``): on a GPU host the CPU bounds throughput and
JPEG is the one common format with a GPU codec, but whether it pays against
libjpeg-turbo on the host's cores (about 4 core-ms per MP to decode, 3 to encode
here) is for ``bench/gpu_jpeg.py`` on the device to say (``bench/device_check.sh``).
nvJPEG's pixels are not libjpeg-turbo's bit for bit (its IDCT and chroma upsampling
differ by a level or so), which is why this is a choice and not the default path.
PNG and WebP have no GPU encoder; they stay on the CPU codecs.
"""

from __future__ import annotations

import numpy as np
import torch


class GpuJpegUnavailable(RuntimeError):
    pass


class GpuJpeg:
    """nvJPEG on ``device``; raises :class:`GpuJpegUnavailable` where it cannot run."""

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise GpuJpegUnavailable(f"SR_GPU_JPEG needs a CUDA device; this server runs on {device}")
        try:
            from torchvision import io as tvio
        except Exception as e:  # not installed, or built for another torch
            raise GpuJpegUnavailable(f"SR_GPU_JPEG needs torchvision with CUDA: {type(e).__name__}: {e}") from None
        self.device = device
        self.io = tvio

    def decode(self, data: bytes, grey: bool) -> np.ndarray:
        """``(H, W, 3)`` RGB or ``(H, W)`` grey uint8 on the host (orientation is the caller's)."""
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        mode = self.io.ImageReadMode.GRAY if grey else self.io.ImageReadMode.RGB
        image = self.io.decode_jpeg(encoded, mode=mode, device=self.device)  # (C, H, W) on the device
        out = image.permute(1, 2, 0).cpu().numpy()
        return out[..., 0] if grey else out

    def encode(self, pixels: np.ndarray, quality: int) -> bytes:
        """``(H, W, 3)`` or ``(H, W)`` uint8 to a baseline JPEG, encoded on the device."""
        planes = pixels[..., None] if pixels.ndim == 2 else pixels
        image = torch.from_numpy(np.ascontiguousarray(planes)).to(self.device).permute(2, 0, 1).contiguous()
        return self.io.encode_jpeg(image, quality=quality).cpu().numpy().tobytes()
