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


def init_from(path: Path, model: nn.Module, *, grow: bool = False) -> list[str]:
    """Copy every tensor of a weights file whose name and shape match; return those copied.

    Used to start x3/x4 from a trained x2 body (the scale-specific tail differs). With
    ``grow``, a smaller tensor of the same name is embedded in the larger one as well
    (:func:`grow_into`): a wider model starts out computing what the file did.
    """
    source = load_file(str(path))
    if grow:
        return grow_into(source, model)
    target = model.state_dict()
    copied = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    model.load_state_dict({k: source[k] for k in copied}, strict=False)
    return copied


def grow_into(source: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Embed narrower weights in a wider model of the same architecture (Net2Net-style widening).

    Each tensor fills the leading corner of its larger counterpart, so the old channels keep
    their numbers; the weights from new input channels to old output channels are zeroed, so
    the old outputs (and the image) come out unchanged, while new channels start from the
    model's own initialisation and learn from the first step. Holds for architectures whose
    added channels only meet added channels, as widening every level's ``features`` does.
    Every source tensor must find a place: a missing or wider one is a ``ValueError``.

    A model with a ``deepen(state)`` method (``deconv``: more mapping layers) first renames the
    source's tensors for its own layout and adds identity-initialised layers, so a model both
    deeper and wider than the source also starts out computing what the source did.
    """
    deepen = getattr(model, "deepen", None)
    if deepen is not None:
        source = deepen(source)
    modules = dict(model.named_modules())
    state = model.state_dict()
    copied = []
    for name, old in source.items():
        new = state.get(name)
        if new is None or new.dim() != old.dim() or any(o > n for o, n in zip(old.shape, new.shape, strict=True)):
            found = "nothing" if new is None else f"shape {tuple(new.shape)}"
            raise ValueError(f"cannot grow {name} of shape {tuple(old.shape)} into {found}")
        grown = new.clone()
        if new.dim() > 1:  # a weight: (out, in, ...), or (in, out, ...) for a transposed conv
            out_dim = 1 if isinstance(modules[name.rpartition(".")[0]], nn.ConvTranspose2d) else 0
            new_in_to_old_out = [slice(None)] * new.dim()
            new_in_to_old_out[out_dim] = slice(0, old.shape[out_dim])
            new_in_to_old_out[1 - out_dim] = slice(old.shape[1 - out_dim], None)
            grown[tuple(new_in_to_old_out)] = 0
        grown[tuple(slice(0, n) for n in old.shape)] = old
        state[name] = grown
        copied.append(name)
    model.load_state_dict(state)
    return copied
