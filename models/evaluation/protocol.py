"""The evaluation protocol of ../shared/datasets/README.md.

1. modcrop the HR image to multiples of s; 2. LR by Pillow bicubic (antialiased);
3. upscale to exactly the HR size; 4-5. Y channel, shave s pixels, PSNR/SSIM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from srserve.models.evaluation.metrics import y_psnr_ssim

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

#: upscale(lr_rgb_uint8, scale) -> hr_rgb_uint8 of exactly scale x the LR size
Upscaler = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Score:
    image: str
    psnr: float
    ssim: float


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def modcrop(image: Image.Image, scale: int) -> Image.Image:
    w, h = image.size
    return image.crop((0, 0, w - w % scale, h - h % scale))


def make_lr(hr: Image.Image, scale: int) -> Image.Image:
    w, h = hr.size
    return hr.resize((w // scale, h // scale), Image.Resampling.BICUBIC)


def pil_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline of the published tables (Pillow's Keys cubic)."""
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.Resampling.BICUBIC))


def pair(hr_image: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 RGB arrays of one image under the protocol."""
    hr = modcrop(hr_image, scale)
    return np.asarray(make_lr(hr, scale)), np.asarray(hr)


def score(upscale: Upscaler, images: Iterable[tuple[str, Image.Image]], scale: int) -> list[Score]:
    scores = []
    for name, image in images:
        lr, hr = pair(image, scale)
        out = upscale(lr, scale)
        if out.shape != hr.shape:
            raise ValueError(f"{name}: upscaler returned {out.shape}, expected {hr.shape}")
        scores.append(Score(name, *y_psnr_ssim(out, hr, border=scale)))
    return scores


def mean(scores: list[Score]) -> tuple[float, float]:
    return (
        float(np.mean([s.psnr for s in scores])),
        float(np.mean([s.ssim for s in scores])),
    )
