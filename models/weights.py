"""Safetensors weights with a JSON card; verified by sha256, never unpickled.

``weights/<name>_x<scale>.safetensors`` holds the tensors and
``weights/<name>_x<scale>.json`` the card: architecture and its keyword
arguments, scale, parameter count, sha256 of the file, training data and recipe,
wall time and measured PSNR/SSIM.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from srserve.files import write_atomic
from srserve.models.registry import MODELS

CARD_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file or its card is missing, altered or inconsistent."""


def weights_stem(name: str, scale: int) -> str:
    return f"{name}_x{scale}"


def card_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_weights(model: nn.Module, path: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``model``'s tensors and a card completed with size, count and hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"architecture": str(card["architecture"]), "kwargs": json.dumps(card["kwargs"])}
    # safetensors' save_file creates 0600 files: a server running as another user could not read them.
    write_atomic(path, save(state, metadata=meta))
    full = {
        "card_version": CARD_VERSION,
        **card,
        "parameters": count_parameters(model),
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    write_atomic(card_path(path), (json.dumps(full, indent=2) + "\n").encode())
    return full


def read_card(path: Path) -> dict[str, Any]:
    cpath = card_path(path)
    if not cpath.is_file():
        raise WeightsError(f"{path}: no card {cpath.name} beside it")
    return json.loads(cpath.read_text())


def load_state(path: Path, card: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors of ``path`` after checking its sha256 against the card."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    actual = sha256_file(path)
    if actual != card.get("sha256"):
        raise WeightsError(f"{path}: sha256 {actual} does not match its card ({card.get('sha256')})")
    return load_file(str(path))  # safetensors: plain tensors, no pickle


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the card's architecture, load verified weights strictly, eval mode."""
    card = read_card(path)
    state = load_state(path, card)
    model = MODELS.build(card["architecture"], **card["kwargs"])
    model.load_state_dict(state, strict=True)
    if count_parameters(model) != card.get("parameters"):
        n = count_parameters(model)
        raise WeightsError(f"{path}: card says {card.get('parameters')} parameters, the model has {n}")
    return model.to(device).eval(), card


def update_card(path: Path, **fields: Any) -> dict[str, Any]:
    """Add human notes to a card (e.g. how far a target is); the file must still match it."""
    card = read_card(path)
    if sha256_file(path) != card.get("sha256"):
        raise WeightsError(f"{path}: sha256 does not match its card; refusing to annotate")
    card.update(fields)
    write_atomic(card_path(path), (json.dumps(card, indent=2) + "\n").encode())
    return card


def find_weights(weights_dir: Path, name: str, scale: int) -> Path:
    return Path(weights_dir) / f"{weights_stem(name, scale)}.safetensors"


def available(weights_dir: Path) -> list[tuple[str, int, Path]]:
    """(architecture, scale, path) of every carded weights file in ``weights_dir``."""
    found = []
    for path in sorted(Path(weights_dir).glob("*.safetensors")):
        if card_path(path).is_file():
            card = read_card(path)
            found.append((str(card["architecture"]), int(card["scale"]), path))
    return found
