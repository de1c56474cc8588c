"""One entry point for "give me model NAME at scale S": trained weights for
learned models, a fresh :class:`~srserve.models.resize.Interpolate` for resizers."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srserve.models.registry import MODELS
from srserve.models.weights import WeightsError, available, find_weights, load_model

#: The shipped weights: package data, so a source tree and an installed wheel both have them.
DEFAULT_WEIGHTS_DIR = Path(str(files("srserve.weights")))


def learned_scales(name: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> list[int]:
    """Scales of ``name`` for which ``weights_dir`` holds trained weights."""
    MODELS.get(name)  # unknown names fail with the list of known ones
    return sorted(scale for arch, scale, _ in available(weights_dir) if arch == name)


def get_upsampler(
    name: str,
    scale: float,
    *,
    weights_dir: Path = DEFAULT_WEIGHTS_DIR,
    device: torch.device | str = "cpu",
    **resize_options: Any,
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The ready-to-run module for ``name`` at ``scale`` and its card (None for resizers)."""
    spec = MODELS.get(name)
    if spec.kind == "resize":
        return MODELS.build(name, scale=scale, **resize_options).to(device).eval(), None
    if scale not in spec.scales:
        raise ValueError(f"{name} supports scales {list(spec.scales)}, not {scale}")
    path = find_weights(weights_dir, name, int(scale))
    if not path.is_file():
        have = learned_scales(name, weights_dir)
        raise WeightsError(f"no trained weights for {name} x{int(scale)} in {weights_dir}; available scales: {have}")
    return load_model(path, device)
