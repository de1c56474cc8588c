"""sreval for the x1 restoration models: RGB PSNR/SSIM at one degradation level, against the
degraded input and, for denoising, CBM3D (the ``bm3d`` package, an evaluation-only extra)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from srserve.models.catalog import get_upsampler
from srserve.models.imageops import upscale_array
from srserve.models.training.degrade import TASKS, Degradation, degraded_set, score_restoration
from srserve.models.weights import WeightsError

Restorer = Callable[[np.ndarray], np.ndarray]


def cbm3d(sigma: float) -> Restorer | None:
    """CBM3D at the true sigma (its best case), or None without the ``bm3d`` package."""
    try:
        import bm3d
    except ImportError:
        return None

    def restore(noisy: np.ndarray) -> np.ndarray:
        out = bm3d.bm3d_rgb(noisy.astype(np.float64) / 255.0, sigma / 255.0)
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)

    return restore


def evaluate(
    task: str,
    level: float,
    images: list[tuple[str, np.ndarray]],
    weights_dir: Path,
    device: torch.device,
    compare: Path | None,
    crop: int,
    side_by_side: Callable[[list[np.ndarray], int], object],
) -> int:
    degradation: Degradation = TASKS[task]
    pairs = degraded_set([img for _, img in images], degradation, level)
    methods: dict[str, Restorer] = {f"{task} input": lambda lq: lq}
    if task == "denoise":
        baseline = cbm3d(level)
        if baseline is None:
            print("sreval: CBM3D left out: pip install bm3d (or srserve[eval])", file=sys.stderr)
        else:
            methods["CBM3D"] = baseline
    try:
        model, _ = get_upsampler(task, 1, weights_dir=weights_dir, device=device)
    except (KeyError, ValueError, WeightsError) as e:
        print(f"sreval: no {task} model: {e}", file=sys.stderr)
        return 2
    methods[task] = lambda lq: upscale_array(model, lq, device)

    unit = "quality" if task == "dejpeg" else "sigma"
    print(f"{len(images)} images, {task} at {unit} {level:g}: RGB PSNR (dB) / SSIM on 8-bit images")
    width = max(len(m) for m in methods)
    for name, restore in methods.items():
        ps, ss = score_restoration(restore, pairs)
        print(f"{name:<{width}}  {ps:6.2f} / {ss:.4f}")
    if compare is not None:
        compare.mkdir(parents=True, exist_ok=True)
        for (image_name, _), (lq, hr) in zip(images, pairs, strict=True):
            panels = [lq, methods[task](lq), hr]
            side_by_side(panels, crop).save(compare / f"{Path(image_name).stem}_{task}_{level:g}.png")  # type: ignore[attr-defined]
        print(f"comparison crops ({task} input | restored | truth) in {compare}")
    return 0
