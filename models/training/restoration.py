"""srtrain's x1 restoration tasks: training on degradations made on the fly, validation and the card's
numbers at the task's evaluation level (RGB PSNR/SSIM, with the degraded input as the baseline)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srserve.models.evaluation.protocol import list_images
from srserve.models.imageops import upscale_array
from srserve.models.training.data import training_images
from srserve.models.training.degrade import Degradation, RestorationSampler, degraded_set, score_restoration
from srserve.models.training.trainer import Recipe, Sampler


def load_images(files: list[Path], shrink: int = 1, rescales: tuple[float, ...] = ()) -> list[np.ndarray]:
    """The images of ``files``, each followed by its copies resized by ``rescales`` (scale augmentation)."""
    return [np.asarray(image) for _, image in training_images(files, shrink, rescales)]


def restoration_task(
    degradation: Degradation,
    train_files: list[Path],
    val_files: list[Path],
    device: torch.device,
    recipe: Recipe,
    shrink: int = 1,
    rescales: tuple[float, ...] = (),
) -> tuple[Callable[[torch.Generator], Sampler], Callable[[nn.Module], tuple[float, float]]]:
    """Sampler factory and validation (RGB PSNR/SSIM at the evaluation level) of one restoration task;
    ``rescales`` adds resized copies of the training images only."""
    train_images = load_images(train_files, shrink, rescales)
    clean = [torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous() for img in train_images]
    val_pairs = degraded_set(load_images(val_files, shrink), degradation, degradation.eval_level)

    def make_sampler(generator: torch.Generator) -> Sampler:
        return RestorationSampler(
            clean, degradation=degradation, patch=recipe.patch, batch=recipe.batch, generator=generator
        )

    def validate_model(model: nn.Module) -> tuple[float, float]:
        return score_restoration(lambda lq: upscale_array(model, lq, device), val_pairs)

    return make_sampler, validate_model


def evaluate(model: nn.Module, degradation: Degradation, folder: Path, device: torch.device) -> dict[str, Any]:
    """RGB PSNR/SSIM of the restored and of the degraded images of ``folder`` at the evaluation level."""
    images = load_images(list_images(folder))
    pairs = degraded_set(images, degradation, degradation.eval_level)
    out_psnr, out_ssim = score_restoration(lambda lq: upscale_array(model, lq, device), pairs)
    in_psnr, in_ssim = score_restoration(lambda lq: lq, pairs)
    return {
        "level": degradation.eval_level,
        "images": len(images),
        "psnr_rgb": round(out_psnr, 3),
        "ssim_rgb": round(out_ssim, 4),
        "input_psnr_rgb": round(in_psnr, 3),
        "input_ssim_rgb": round(in_ssim, 4),
        "gain_db": round(out_psnr - in_psnr, 3),
        "protocol": f"{degradation.task} at {degradation.eval_level:g}, 8-bit RGB, no border shaved, seed 0",
    }


def cpu_seconds_per_megapixel(model: nn.Module, side: int = 512, repeats: int = 3) -> dict[str, Any]:
    """Forward time of ``model`` on the CPU with this process's threads, per megapixel of input."""
    cpu = model.to("cpu").eval()
    x = torch.rand(1, 3, side, side)
    with torch.inference_mode():
        cpu(x)
        best = min(_timed(cpu, x) for _ in range(repeats))
    return {
        "seconds": round(best * 1e6 / (side * side), 3),
        "input": f"{side}x{side}",
        "threads": torch.get_num_threads(),
    }


def _timed(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start
