"""A spandrel network under the engine's module contract (``scale``, ``receptive_radius``, ``grid``)."""

from __future__ import annotations

import copy
import threading
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_requirements(x: torch.Tensor, minimum: int, multiple_of: int, square: bool) -> torch.Tensor:
    """Pad at the bottom and right to the architecture's size requirements, as spandrel does for a whole
    image (reflect as far as the image allows, then repeat the edge), so a window at the image's bottom or
    right edge is padded exactly as the whole image is there."""
    h, w = x.shape[-2:]
    th, tw = max(h, minimum), max(w, minimum)
    th, tw = -(-th // multiple_of) * multiple_of, -(-tw // multiple_of) * multiple_of
    if square:
        th = tw = max(th, tw)
    ph, pw = th - h, tw - w
    if not (ph or pw):
        return x
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


class SpandrelNet(nn.Module):
    """``descriptor.model`` called as spandrel calls it, padded to its size requirements and cropped back.

    Output is not clamped here (the service clamps when it rounds to pixels). ``receptive_radius`` and
    ``grid`` are set by :func:`~srserve.models.community.reach.choose_tiling` (or from a card) before the
    model pool enters the network; the placeholders until then describe nothing.
    """

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.net = descriptor.model
        # spandrel's per-architecture call (some return a tuple); private in spandrel 0.4.2, which is
        # pinned, and tests/test_community.py runs every architecture through it.
        self._call = descriptor._call_fn
        self.scale = int(descriptor.scale)
        req = descriptor.size_requirements
        self.minimum, self.multiple_of, self.square = int(req.minimum), int(req.multiple_of), bool(req.square)
        self.receptive_radius = 0
        self.grid = 1
        # One call at a time where the network rewrites its own tensors as it runs (see writes_itself):
        # batches side by side on a CPU's lanes would read weights another call is replacing.
        self._one_at_a_time: threading.Lock | None = None

    @property
    def reentrant(self) -> bool:
        return self._one_at_a_time is None

    def run_one_at_a_time(self) -> None:
        self._one_at_a_time = threading.Lock()

    def widened(self) -> SpandrelNet:
        """A float64 copy (for measuring the reach), sharing nothing that a call changes."""
        return self.copy_to(dtype=torch.float64)

    def copy_to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SpandrelNet:
        """A copy on ``device`` in ``dtype``, sharing nothing that a call changes."""
        other = copy.copy(self)
        other._modules = {"net": copy.deepcopy(self.net).to(device=device, dtype=dtype)}
        other._one_at_a_time = None if self.reentrant else threading.Lock()
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with self._one_at_a_time or nullcontext():
            out = self._call(self.net, pad_to_requirements(x, self.minimum, self.multiple_of, self.square))
        return out[..., : h * self.scale, : w * self.scale]


def _tensor_state(module: nn.Module) -> dict[str, tuple[int, int, int]]:
    """Every tensor a module holds (parameters, buffers, plain attributes): identity, storage and version."""
    state = {}
    for prefix, m in module.named_modules():
        tensors = {**dict(m.named_parameters(recurse=False)), **dict(m.named_buffers(recurse=False))}
        tensors.update({k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)})
        for k, t in tensors.items():
            state[f"{prefix}.{k}"] = (id(t), t.data_ptr(), -1 if t.is_inference() else t._version)
    return state


def writes_itself(net: SpandrelNet, side: int = 32) -> bool:
    """Whether a call changes the tensors the network holds (SPAN, for one, re-fuses its convolutions into
    new weight storage on every call in eval mode): measured over a second call, after any lazy set-up."""
    x = torch.rand(1, 3, side, side, device=next(net.parameters()).device)
    with torch.inference_mode():
        net(x)
        before = _tensor_state(net.net)
        net(x)
    return _tensor_state(net.net) != before
