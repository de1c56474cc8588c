"""The training loop: Adam, cosine schedule, L1 (or L2) loss, periodic validation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from srserve.models.evaluation.protocol import mean, score
from srserve.models.imageops import upscale_array
from srserve.models.training.checkpoint import load_checkpoint, save_checkpoint
from srserve.models.training.data import PairSet, PatchSampler

# L1 trains faster and sharper; an L2 finish optimises PSNR itself (EDSR, Lim et al. 2017).
LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


@dataclass
class Recipe:
    """Hyper-parameters recorded in the weights card."""

    steps: int = 20000
    batch: int = 16
    patch: int = 48
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup: int = 200
    loss: str = "l1"
    optimizer: str = "adam(0.9, 0.999)"
    schedule: str = "linear warmup, then cosine to min_lr"
    augment: str = "8 flips/rotations"
    seed: int = 0
    val_every: int = 500
    extra: dict[str, Any] = field(default_factory=dict)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


class Sampler(Protocol):
    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of (input, target) float patches."""
        ...


def validate(model: nn.Module, val: PairSet, scale: int, device: torch.device) -> tuple[float, float]:
    """Mean Y PSNR/SSIM of ``model`` on the held-out images under the SR protocol."""

    def upscale(lr: np.ndarray, _: int) -> np.ndarray:
        return upscale_array(model, lr, device)

    # PairSet holds the already-made LR; rebuild PIL HR images for the protocol's scorer.
    from PIL import Image

    images = [(n, Image.fromarray(hr.permute(1, 2, 0).numpy())) for n, hr in zip(val.names, val.hr, strict=True)]
    return mean(score(upscale, images, scale))


def sr_task(
    train_set: PairSet, val_set: PairSet, scale: int, device: torch.device, recipe: Recipe
) -> tuple[Callable[[torch.Generator], Sampler], Callable[[nn.Module], tuple[float, float]]]:
    """Sampler factory and validation of super-resolution at ``scale``."""
    return (
        lambda g: PatchSampler(train_set, scale=scale, patch=recipe.patch, batch=recipe.batch, generator=g),
        lambda model: validate(model, val_set, scale, device),
    )


def train(
    model: nn.Module,
    *,
    make_sampler: Callable[[torch.Generator], Sampler],
    validate_model: Callable[[nn.Module], tuple[float, float]],
    recipe: Recipe,
    run_dir: Path,
    device: torch.device,
    resume: bool = False,
    show_progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Train ``model`` in place, keeping the best validation weights in ``run_dir/best.safetensors``.

    ``make_sampler(generator)`` draws the training batches (from the one generator that
    checkpoints save, so a resumed run repeats exactly); ``validate_model`` scores the model
    (PSNR, SSIM) on held-out data, higher is better.

    Returns a summary (best step, best validation PSNR/SSIM, wall time, steps run).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    last, best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(0.9, 0.999))
    state: dict[str, Any] = {"step": 0, "best_psnr": -math.inf, "best_ssim": 0.0, "best_step": 0, "wall_s": 0.0}
    if resume and last.is_file():
        state = load_checkpoint(last, model, optimizer, generator)
    # Every invocation that trained this run, so a card tells a resumed run from a straight one.
    earlier = [{"command": "(not recorded)", "from_step": 0, "steps": None}] if state["step"] else []
    state.setdefault("history", earlier).append({"command": command, "from_step": state["step"], "steps": recipe.steps})
    sampler = make_sampler(generator)

    started = time.monotonic() - state["wall_s"]
    bar = tqdm(total=recipe.steps, initial=state["step"], disable=not show_progress, unit="step", dynamic_ncols=True)
    running = None
    while state["step"] < recipe.steps:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr_at(step)
        lr_batch, hr_batch = sampler.sample()
        out = model(lr_batch.to(device))
        loss = LOSSES[recipe.loss](out, hr_batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        state["step"] = step + 1
        bar.update(1)
        if state["step"] % recipe.val_every == 0 or state["step"] == recipe.steps:
            model.eval()
            psnr_v, ssim_v = validate_model(model)
            model.train()
            if psnr_v > state["best_psnr"]:
                state.update(best_psnr=psnr_v, best_ssim=ssim_v, best_step=state["step"])
                save_checkpoint(best_path, model, optimizer, generator, state)
            state["wall_s"] = time.monotonic() - started
            save_checkpoint(last, model, optimizer, generator, state)
            bar.set_postfix(loss=f"{running:.4f}", val=f"{psnr_v:.2f}", best=f"{state['best_psnr']:.2f}")
            if not show_progress:
                print(
                    f"step {state['step']}/{recipe.steps} loss {running:.4f} val {psnr_v:.3f} dB "
                    f"best {state['best_psnr']:.3f} @ {state['best_step']}",
                    flush=True,
                )
    bar.close()
    state["wall_s"] = time.monotonic() - started
    return {**state, "recipe": asdict(recipe)}
