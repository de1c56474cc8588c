"""How a community network may be tiled, measured on the network itself (no list of names).

* **Reach**: a batch of one random image and copies of it with single pixels changed;
  the output pixels that differ from the first copy's are those a pixel reaches.
  The largest distance, over pixels at several phases (window attention reaches
  differently from different positions in its window), is the LR radius a halo
  must cover (with a margin: :func:`with_margin`). A reach that touches the border of the largest probe is global
  (channel attention, global pooling) as far as tiling is concerned.
* **Exactness**: an image cut into 2x2 windows with that halo, run as one batch
  (as a GPU batches them) and one by one (as a CPU's lanes run them), must stitch to
  the whole image's output with 0 differing 8-bit pixels. Where a network's CPU
  kernels round by shape (NAFNet, ESRGAN: their float output depends on the batch
  and window size), other images can still differ by one level in a rare pixel.
  Tried with windows starting on multiples of 1, 2, 4, ... (and of the
  architecture's ``multiple_of``): a network that pads to its attention
  window, or pools, is exact only on its own grid. The smallest grid that is exact wins.
* Otherwise the whole image is one window (``mode="whole"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from srserve.models.community.net import SpandrelNet

#: LR probe sides tried in turn; a reach at the border of the last is global.
PROBES = (48, 96, 192)
#: Changed pixels' offsets from the probe's centre: phases 0-15 of any window up to 16 px.
OFFSETS = ((0, 0), (3, 5), (7, 7), (5, 12), (12, 2), (15, 15))
#: Window grids tried for exact stitching (windows start on multiples of one).
GRIDS = (1, 2, 4, 8, 16, 32, 64)
#: Version of this measurement: a card's tiling measured by another is measured again.
METHOD = 3


@dataclass(frozen=True)
class Tiling:
    """``exact``: windows with a halo of ``radius`` LR px, starting on multiples of ``grid``, stitch to the
    whole image's output; ``whole``: the image runs as one window."""

    mode: Literal["exact", "whole"]
    radius: int = 0
    grid: int = 1

    def card(self) -> dict[str, object]:
        """What a card records (``srserve convert``), so a server need not measure it again."""
        return {"mode": self.mode, "radius": self.radius, "grid": self.grid, "method": METHOD}

    @staticmethod
    def from_card(card: dict) -> Tiling | None:
        """The card's tiling if this method measured it; None otherwise (measure it)."""
        t = card.get("tiling")
        if not isinstance(t, dict) or t.get("method") != METHOD or t.get("mode") not in ("exact", "whole"):
            return None
        try:
            radius, grid = int(t["radius"]), int(t["grid"])
        except (KeyError, TypeError, ValueError):
            return None
        return Tiling(t["mode"], radius, grid) if radius >= 0 and grid >= 1 else None

    def apply(self, net: SpandrelNet) -> None:
        """Set ``net``'s radius and grid for the planner."""
        net.receptive_radius, net.grid = self.radius, self.grid


def _run(net: SpandrelNet, x: torch.Tensor) -> torch.Tensor:
    param = next(net.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        return net(x.to(device, dtype).contiguous(memory_format=torch.channels_last)).cpu()


def _bases(probe: int, seed: int, faint: bool) -> list[torch.Tensor]:
    """Images the changes are made in: full-range noise, and (``faint``) faint noise on grey, where a random
    network saturates less (a saturated unit hides what reaches it)."""
    g = torch.Generator().manual_seed(seed)
    bases = [torch.rand(1, 3, probe, probe, generator=g)]
    if faint:
        bases.append(0.5 + 0.05 * torch.randn(1, 3, probe, probe, generator=g))
    return bases


def reach(
    net: SpandrelNet, probe: int, offsets: tuple[tuple[int, int], ...] = OFFSETS, faint: bool = True, seed: int = 0
) -> int | None:
    """The LR radius around a changed pixel in which the output changes; None where it touches the probe's edge."""
    c = probe // 2 - 8
    s = net.scale
    radius = 0
    for base in _bases(probe, seed, faint):
        batch = base.repeat(1 + len(offsets), 1, 1, 1)
        for i, (dy, dx) in enumerate(offsets, start=1):
            batch[i, :, c + dy, c + dx] = 1.0 - batch[i, :, c + dy, c + dx]
        out = _run(net, batch)
        for i, (dy, dx) in enumerate(offsets, start=1):
            changed = (out[i] != out[0]).any(dim=0).nonzero()
            if not len(changed):
                continue
            lr = changed // s
            y, x = c + dy, c + dx
            r = int(torch.maximum((lr[:, 0] - y).abs(), (lr[:, 1] - x).abs()).max())
            if r >= min(y, x, probe - 1 - y, probe - 1 - x):
                return None
            radius = max(radius, r)
    return radius


def with_margin(reach: int) -> int:
    """The halo for a measured reach: an eighth more, and a pixel. A change can fade below even float64's
    resolution (or behind a saturated unit of the probe) before the reach's true edge: tiny random SPANs
    measured 19 and 20 px where their layers allow about 21. A wider halo only computes a little more."""
    return reach + reach // 8 + 1


def measured_reach(net: SpandrelNet) -> int | None:
    """:func:`reach` on growing probes until one holds it; None: global (as far as the largest probe sees).

    Measured in float64 where the network runs in it (float32 rounds a change that has passed through many
    layers to nothing sooner, which would understate the reach). A larger probe is first tried with one
    changed pixel, so a global network costs two images per probe, not the full set."""
    try:
        wide = net.widened()
        _run(wide, torch.rand(1, 3, 16, 16))
    except (RuntimeError, TypeError):  # a network with float32 built in
        wide = net
    first, *larger = PROBES
    if (r := reach(wide, first)) is not None:
        return r
    for probe in larger:
        if reach(wide, probe, offsets=OFFSETS[:1], faint=False) is not None:
            return reach(wide, probe)
    return None


def _axis(length: int, halo: int, grid: int) -> tuple[int, int, int]:
    """Two windows of one length along an axis: (window, second start, cut between the cores).

    The second starts on an odd multiple of ``grid``, so a network exact only on a coarser grid fails."""
    window = length // 2 + halo + grid
    start = (length - window) // grid * grid
    if (start // grid) % 2 == 0:
        start -= grid
    window = length - start
    cut = (start + window) // 2
    return window, start, cut


def tiles_exact(net: SpandrelNet, radius: int, grid: int, seed: int = 1) -> bool:
    """Whether 2x2 windows with halo ``radius`` on ``grid`` stitch to the whole output, run as one batch
    and each on its own (as a CPU's lanes run them), compared as 8-bit pixels (what the service answers)."""
    s = net.scale
    side = 4 * radius + 4 * grid + 40
    h, w = side, side + grid + 7  # unequal sides, neither a multiple of the grid
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    wh, sh, ch = _axis(h, radius, grid)
    ww, sw, cw = _axis(w, radius, grid)
    if min(ch - sh, wh - ch, cw - sw, ww - cw) < radius:
        return False
    starts = [(y, x) for y in (0, sh) for x in (0, sw)]
    windows = torch.cat([image[..., y : y + wh, x : x + ww] for y, x in starts])
    whole = _run(net, image)[0]

    def pixels(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(0, 1).mul(255).round()

    def stitches(tiled: torch.Tensor) -> bool:
        stitched = torch.empty_like(whole)
        for k, (y, x) in enumerate(starts):
            y0, y1 = (0, ch) if y == 0 else (ch, h)
            x0, x1 = (0, cw) if x == 0 else (cw, w)
            stitched[:, y0 * s : y1 * s, x0 * s : x1 * s] = tiled[
                k, :, (y0 - y) * s : (y1 - y) * s, (x0 - x) * s : (x1 - x) * s
            ]
        return torch.equal(pixels(stitched), pixels(whole))

    one_by_one = torch.cat([_run(net, windows[k : k + 1]) for k in range(len(starts))])
    return stitches(_run(net, windows)) and stitches(one_by_one)


def choose_tiling(net: SpandrelNet) -> Tiling:
    """Measure ``net`` and set its ``receptive_radius`` and ``grid`` for the planner (see the module doc).

    Measured on a CPU copy where the network lives elsewhere: the reach and the grid are the network's,
    while a GPU's kernels pick algorithms by shape, so that a window and the whole image can round a
    pixel differently there (as for the built-in models: close, not bit-identical, on CUDA), which
    would make every network look global."""
    param = next(net.parameters(), None)
    probe = net if param is None or param.device.type == "cpu" else net.copy_to("cpu", torch.float32)
    tiling = Tiling("whole")
    radius = measured_reach(probe)
    if radius is not None:
        radius = with_margin(radius)
        grids = sorted({g for g in (*GRIDS, net.multiple_of) if g % net.multiple_of == 0})
        tiling = next((Tiling("exact", radius, g) for g in grids if tiles_exact(probe, radius, g)), tiling)
    tiling.apply(net)
    return tiling
