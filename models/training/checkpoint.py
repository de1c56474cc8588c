"""Resumable training state in safetensors (model, Adam moments, RNG, counters).

No pickle: optimizer moments are flattened to named tensors and the scalars go
into the safetensors metadata as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Adam,
    generator: torch.Generator,
    meta: dict[str, Any],
) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    steps = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            name = names[id(p)]
            tensors[f"adam.exp_avg.{name}"] = state["exp_avg"].contiguous()
            tensors[f"adam.exp_avg_sq.{name}"] = state["exp_avg_sq"].contiguous()
            steps[name] = float(state["step"])
    tensors["rng"] = generator.get_state()
    tmp = Path(path).with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta), "adam_steps": json.dumps(steps)})
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Adam, generator: torch.Generator
) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    steps = json.loads(metadata["adam_steps"])
    for name, p in model.named_parameters():
        if name in steps:
            optimizer.state[p] = {
                "step": torch.tensor(steps[name]),
                "exp_avg": tensors[f"adam.exp_avg.{name}"],
                "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"],
            }
    generator.set_state(tensors["rng"])
    return json.loads(metadata["meta"])


def init_from(path: Path, model: nn.Module) -> list[str]:
    """Copy every tensor of a weights file whose name and shape match; return those copied.

    Used to start x3/x4 from a trained x2 body (the scale-specific tail differs).
    """
    source = load_file(str(path))
    target = model.state_dict()
    copied = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    model.load_state_dict({k: source[k] for k in copied}, strict=False)
    return copied
