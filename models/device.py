"""Which torch device a command runs on: one rule for the service, ``srserve upscale``, srtrain and sreval."""

from __future__ import annotations

import torch

DEVICE_HELP = "auto (the first CUDA device when there is one, else the CPU), cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    """The device named ``name``; ``auto`` picks CUDA when present. Raises ValueError for what cannot run here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use {DEVICE_HELP}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but this machine has no CUDA device; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r} is not supported; use {DEVICE_HELP}")
    return device
