"""A deliberately slow model for tests that need work to take time: deadlines, clients that leave, drains.

Each batch sleeps ``delay_s`` before a nearest-neighbour x2, so how long a
request takes is set by the test, not by how fast this machine's CPU is.
:func:`register` adds ``slow`` to the registry (only the server processes that
test it do: the test process's registry stays the shipped one);
:func:`slow_weights_dir` writes its carded weights beside links to the shipped ones.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from srserve.models.registry import MODELS
from srserve.models.weights import save_weights
from tests.conftest import WEIGHTS

NAME = "slow"


class SlowDoubler(nn.Module):
    """Args:
    scale: must be 2.
    delay_s: seconds each forward call (one batch) sleeps.
    """

    receptive_radius = 0

    def __init__(self, *, scale: int = 2, delay_s: float = 0.2) -> None:
        super().__init__()
        if scale != 2:
            raise ValueError("the slow test model upscales x2 only")
        self.scale, self.delay_s = scale, delay_s
        self.gain = nn.Parameter(torch.ones(()))  # something to save, so it loads like any learned model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return x.repeat_interleave(2, -2).repeat_interleave(2, -1) * self.gain


def register() -> None:
    MODELS.register(NAME, kind="learned", scales=(2,), description="test model: sleeps, then nearest x2")(SlowDoubler)


def slow_weights_dir(folder: Path, delay_s: float) -> Path:
    """``folder`` with the shipped weights (linked) and ``slow_x2`` sleeping ``delay_s`` a batch."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in WEIGHTS.iterdir():
        if path.suffix in (".safetensors", ".json"):
            (folder / path.name).symlink_to(path)
    card = {
        "architecture": NAME,
        "kwargs": {"scale": 2, "delay_s": delay_s},
        "scale": 2,
        "training": "none: a test model",
    }
    save_weights(SlowDoubler(delay_s=delay_s), folder / "slow_x2.safetensors", card)
    return folder
