"""Degradations synthesised on the fly for the x1 restoration models, and how they are scored.

``dejpeg``: a JPEG round trip through Pillow (4:2:0, as cameras and most
software save), blind over quality 10-50. ``denoise``: additive Gaussian noise,
blind over sigma 0-50 (8-bit units), rounded and clipped to 8 bits as a saved
file is. Evaluation uses one fixed level (quality 20, sigma 25) and scores
RGB PSNR/SSIM on the 8-bit images.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from srserve.models.evaluation.metrics import psnr, ssim
from srserve.models.training.data import dihedral


@dataclass(frozen=True)
class Degradation:
    """One restoration task's degradation, drawn uniformly from ``[low, high]``.

    Args:
        task: ``dejpeg`` (level: JPEG quality) or ``denoise`` (level: Gaussian sigma, 8-bit units).
        low: one end of the levels drawn (inclusive): quality 10 or sigma 0.
        high: the other end: quality 50 or sigma 50.
        eval_level: the level the task is evaluated at.
    """

    task: str
    low: float
    high: float
    eval_level: float

    def draw(self, rng: np.random.Generator) -> float:
        level = rng.uniform(self.low, self.high)
        return float(round(level)) if self.task == "dejpeg" else float(level)

    def apply(self, image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        """``image`` (uint8 HWC RGB) degraded at ``level``."""
        if self.task == "dejpeg":
            return jpeg(image, int(level))
        return add_noise(image, level, rng)


TASKS = {
    "dejpeg": Degradation("dejpeg", 10, 50, eval_level=20),
    "denoise": Degradation("denoise", 0, 50, eval_level=25),
}


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float64) + rng.normal(0.0, sigma, image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def rgb_psnr_ssim(output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """PSNR over all RGB values; SSIM as the mean over the three channels."""
    return psnr(output, target), float(np.mean([ssim(output[..., c], target[..., c]) for c in range(3)]))


class RestorationSampler:
    """Batches of (degraded, clean) float patches cut from clean uint8 CHW images.

    Args:
        images: the clean training images, uint8 CHW.
        degradation: what to synthesise, at a fresh random level per patch.
        patch: patch side in pixels.
        batch: patches per batch.
        generator: the only source of randomness, so runs repeat and resume exactly.
    """

    def __init__(
        self,
        images: list[torch.Tensor],
        *,
        degradation: Degradation,
        patch: int,
        batch: int,
        generator: torch.Generator,
    ) -> None:
        usable = [t for t in images if min(t.shape[-2:]) >= patch]
        if not usable:
            raise ValueError(f"no training image has a side of at least {patch} px")
        self.images, self.degradation, self.patch, self.batch = usable, degradation, patch, batch
        self.weights = torch.tensor([float(t.shape[-1] * t.shape[-2]) for t in usable])
        self.generator = generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.patch
        rng = np.random.default_rng(self._randint(2**31))  # noise and levels follow the torch generator
        picks = torch.multinomial(self.weights, self.batch, replacement=True, generator=self.generator)
        degraded, clean = [], []
        for k in picks.tolist():
            img = self.images[k]
            y, x = self._randint(img.shape[-2] - p + 1), self._randint(img.shape[-1] - p + 1)
            hr = dihedral(img[:, y : y + p, x : x + p], self._randint(8)).permute(1, 2, 0).contiguous().numpy()
            lq = self.degradation.apply(hr, self.degradation.draw(rng), rng)
            degraded.append(torch.from_numpy(np.array(lq)).permute(2, 0, 1))
            clean.append(torch.from_numpy(hr).permute(2, 0, 1))
        return torch.stack(degraded).float().div_(255.0), torch.stack(clean).float().div_(255.0)


def degraded_set(
    images: list[np.ndarray], degradation: Degradation, level: float, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(degraded, clean) pairs at one fixed level, the same every time (``seed``)."""
    rng = np.random.default_rng(seed)
    return [(degradation.apply(img, level, rng), img) for img in images]


def score_restoration(
    restore: Callable[[np.ndarray], np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """Mean RGB PSNR/SSIM of ``restore(degraded)`` against the clean images."""
    scores = [rgb_psnr_ssim(restore(lq), hr) for lq, hr in pairs]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))
