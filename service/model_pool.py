"""The models resident on one device: learned models loaded once (every scale
that has carded weights), resizers built per distinct option set.

Which model and window a request gets is :mod:`srserve.service.routing`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srserve.models import MODELS
from srserve.models.catalog import get_upsampler, learned_scales
from srserve.models.resize import Interpolate
from srserve.service.cost_model import CostModel


@dataclass
class ModelEntry:
    """One runnable model instance on the device."""

    name: str
    kind: str
    module: nn.Module
    radius: int
    card: dict[str, Any] | None = None
    precision: str = "fp32"
    auto_precision: bool = False  # measured at warm-up on CUDA (service/precision.py) instead of set
    precision_psnr_db: dict[str, float] = field(default_factory=dict)  # what that measurement found
    grid: int = 1  # windows start on multiples of this (2**depth for a network that pools, 16 for dejpeg's phase)
    min_window: int = 0  # the smallest window worth cutting for this model's halo (0: any)

    def max_window(self, configured: int) -> int:
        """SR_TILE_SIZE, or this model's smallest useful window if its halo needs more."""
        return max(configured, self.min_window)

    cost: CostModel = field(default_factory=CostModel)  # measured at warm-up; the flat prior until then
    buckets: tuple[int, ...] = ()  # bucket sides chosen at warm-up (service/buckets.py); (): exact-fit windows
    queue_priced: bool = False  # batching pays on its device (measured): plans priced at the queue as it is

    @property
    def scale(self) -> float:
        return float(self.module.scale)


@dataclass
class ModelPool:
    """Models resident on ``device``.

    Args:
        device: where every model lives.
        weights_dir: carded safetensors files of the learned models.
        enabled: registry names to serve (default: every registered model).
        window: the largest LR window side (core + 2 x halo); the planner picks sizes up to it.
        precision: per-model autocast precision on CUDA (``fp32``, ``fp16``, ``bf16``).
        auto_precision: models not in ``precision`` are measured for it at warm-up (on CUDA).
    """

    device: torch.device
    weights_dir: Path
    enabled: Iterable[str] | None = None
    window: int = 1024
    precision: dict[str, str] = field(default_factory=dict)
    auto_precision: bool = False
    learned: dict[tuple[str, int], ModelEntry] = field(default_factory=dict, init=False)
    _resizers: dict[tuple[Any, ...], ModelEntry] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        names = list(self.enabled) if self.enabled is not None else MODELS.names()
        for n in names:
            MODELS.get(n)  # fail at start-up on a misspelt name
        self.names = sorted(names)

    def load(self) -> None:
        """Load every enabled learned model at every scale with weights.

        The loaded set is published in one assignment: readers (``/v1/models`` while
        starting) see either none or all of them, never a dict being filled.
        """
        learned: dict[tuple[str, int], ModelEntry] = {}
        for name in self.names:
            if MODELS.get(name).kind != "learned":
                continue
            for scale in learned_scales(name, self.weights_dir):
                module, card = get_upsampler(name, scale, weights_dir=self.weights_dir, device=self.device)
                radius = int(module.receptive_radius)
                grid = int(getattr(module, "grid", 1))
                learned[(name, scale)] = ModelEntry(
                    name,
                    "learned",
                    module,
                    radius,
                    card,
                    self.precision.get(name, "fp32"),
                    auto_precision=self.auto_precision and name not in self.precision,
                    grid=grid,
                    # A window under 2x the halo holds no core; under 4x it computes mostly halo.
                    min_window=-(-4 * radius // grid) * grid,
                )
        self.learned = learned

    def scales(self, name: str) -> list[int]:
        return sorted(s for n, s in self.learned if n == name)

    def resizer(self, name: str, align_corners: bool | None, antialias: bool | None) -> ModelEntry:
        """The resizer ``name`` with these options, built once and kept."""
        key = (name, align_corners, antialias)
        if key not in self._resizers:
            module = Interpolate(mode=name, scale=1.0, align_corners=align_corners, antialias=antialias)
            self._resizers[key] = ModelEntry(name, "resize", module.to(self.device), module.receptive_radius)
        return self._resizers[key]

    def entries(self) -> list[ModelEntry]:
        return list(self.learned.values())
