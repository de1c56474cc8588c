"""The models resident on one device: learned models loaded once (every scale
that has carded weights), resizers built per distinct option set.

Which model and window a request gets is :mod:`srserve.service.routing`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srserve.models import MODELS
from srserve.models.catalog import get_upsampler, learned_scales
from srserve.models.community import Tiling, choose_tiling
from srserve.models.community.detect import CommunityModel
from srserve.models.registry import Registry
from srserve.models.resize import Interpolate
from srserve.service import blend, community
from srserve.service.cost_model import CostModel
from srserve.service.inference import predict
from srserve.service.precision import CANDIDATES


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
    whole: bool = False  # no exact halo (a community network's reach is global): whole images, or blended windows
    whole_pixels: int = 0  # LR pixels a whole image may have; larger ones run in blended windows
    blend_psnr_db: float | None = None  # blended windows against the whole image, measured at load
    precisions: tuple[str, ...] = CANDIDATES  # reduced precisions it may run in (what its architecture supports)

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
        models_dir: community model files, each served under its stem (:mod:`srserve.service.community`).
        skip_bad_models: a file there that cannot be served is logged and left out instead of raising.
        whole_max_pixels: a network without an exact halo runs images whole up to this; larger ones blended.
    """

    device: torch.device
    weights_dir: Path
    enabled: Iterable[str] | None = None
    window: int = 1024
    precision: dict[str, str] = field(default_factory=dict)
    auto_precision: bool = False
    models_dir: Path | None = None
    skip_bad_models: bool = False
    whole_max_pixels: int = 4_194_304
    learned: dict[tuple[str, int], ModelEntry] = field(default_factory=dict, init=False)
    _resizers: dict[tuple[Any, ...], ModelEntry] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        names = list(self.enabled) if self.enabled is not None else MODELS.names()
        for n in names:
            MODELS.get(n)  # fail at start-up on a misspelt name
        self.community: list[CommunityModel] = []
        if self.models_dir is not None:  # detected now: a bad file stops start-up before the port opens
            self.community = community.load_folder(self.models_dir, self.device, skip_bad=self.skip_bad_models)
        #: Every model this server knows by name: the built-in ones and its community files.
        self.catalog: Registry = community.catalog(self.community)
        self.names = sorted([*names, *(m.name for m in self.community)])
        served = {n for n in self.names if self.catalog.get(n).kind == "learned"}
        if wrong := sorted(set(self.precision) - served):
            raise ValueError(
                f"SR_PRECISION names {wrong}, which are not served learned models; allowed: {sorted(served)}"
            )

    def load(self) -> None:
        """Load every enabled learned model at every scale with weights.

        The loaded set is published in one assignment: readers (``/v1/models`` while
        starting) see either none or all of them, never a dict being filled.
        """
        learned: dict[tuple[str, int], ModelEntry] = {}
        for name in self.names:
            if name not in MODELS or MODELS.get(name).kind != "learned":  # resizers; community files below
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
        for model in self.community:
            learned[(model.name, int(model.card["scale"]))] = self._community_entry(model)
        self.learned = learned

    def _community_entry(self, model: CommunityModel) -> ModelEntry:
        """How the file's network tiles (from its card where ``srserve convert`` measured it, else measured
        now) and its entry like a built-in model's."""
        card = model.card
        recorded = card.get("tiling", {}) if isinstance(card.get("tiling"), dict) else {}
        tiling = Tiling.from_card(card)
        if tiling is not None:
            tiling.apply(model.net)
        else:
            tiling = choose_tiling(model.net)
        card["tiling"] = tiling.card()
        allowed = {"fp32": True, "fp16": card["supports_half"], "bf16": card["supports_bfloat16"]}
        chosen = self.precision.get(model.name, "fp32")
        if not allowed[chosen]:
            raise ValueError(
                f"SR_PRECISION sets {model.name} to {chosen}, which {card['architecture']} does not support"
            )
        grid, blend_db = tiling.grid, None
        if tiling.mode == "whole":  # blended windows where an image is over the budget: on the grid that errs least
            if tiling == Tiling.from_card({"tiling": recorded}) and "blend_psnr_db" in recorded:
                grid, blend_db = tiling.grid, float(recorded["blend_psnr_db"])
            else:
                grid, blend_db = self._blend_grid(model)
            card["tiling"].update(grid=grid, blend_psnr_db=blend_db)
        return ModelEntry(
            model.name,
            "learned",
            model.net,
            tiling.radius,
            card,
            chosen,
            auto_precision=self.auto_precision and model.name not in self.precision,
            grid=grid,
            min_window=-(-4 * tiling.radius // grid) * grid,
            whole=tiling.mode == "whole",
            whole_pixels=self._whole_budget(model) if tiling.mode == "whole" else self.whole_max_pixels,
            blend_psnr_db=blend_db,
            precisions=tuple(p for p in CANDIDATES if allowed[p]),
        )

    def _whole_budget(self, model: CommunityModel) -> int:
        """LR pixels of a whole image: SR_WHOLE_MAX_PIXELS, and on CUDA no more than half the free device
        memory holds, at what a probe image measured per pixel (activations grow with the image)."""
        if self.device.type != "cuda":
            return self.whole_max_pixels
        side = 128
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        predict(model.net, np.zeros((1, side, side, 3), np.uint8), device=self.device, precision="fp32")
        per_pixel = max(1.0, (torch.cuda.max_memory_allocated(self.device) - before) / (side * side))
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(4096, min(self.whole_max_pixels, int(0.5 * free / per_pixel)))

    def _blend_grid(self, model: CommunityModel) -> tuple[int, float]:
        def run(windows: np.ndarray) -> np.ndarray:
            return predict(model.net, windows, device=self.device)

        return blend.best_grid(run, int(model.card["scale"]))

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
