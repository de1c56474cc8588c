"""An x1 restoration network: SegNet/DeconvNet-style encoder-decoder with max-unpooling.

The encoder's ``MaxPool2d(2, return_indices=True)`` remembers where each maximum
was; the decoder's ``MaxUnpool2d`` puts values back at exactly those places,
always told the ``output_size`` so that odd sizes come back exactly
(65 -> 32 -> 65, not 64). Convolutions after each unpool fill in the rest
(the first decoder stage can be a stride-1 ``ConvTranspose2d``, as in
DeconvNet). A global residual: the network predicts the correction.

Pooling keeps one value in four, which is enough for block artifacts but not
for pixel-level noise: as in RED-Net (Mao et al. 2016), each level's encoder
features are added back after its unpool (symmetric skips), so the decoder
sees full-resolution detail as well as where the maxima were.

JPEG works on a fixed grid (8x8 luma blocks; 16x16 macroblocks when chroma is
subsampled 4:2:0, as Pillow and most cameras save), counted from the image's
first pixel, and its artifacts depend on where a pixel sits in its block. With
``block``, every full-resolution conv gets a learned bias per position in that
period (zero at first, so trained weights start out unchanged), telling the
network the phase it would otherwise have to guess from the blocking itself.

Pooling makes the network shift-equivariant only by multiples of
``2 ** depth``, the phase biases only by multiples of ``block``; its
:attr:`grid` is the larger: tiles must start on that grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from srserve.models.layers import check_scale, conv
from srserve.models.registry import MODELS

TASKS = {
    "dejpeg": "JPEG-artifact removal (blind, quality 10-50): max-unpool encoder-decoder, x1",
    "denoise": "Gaussian denoising (blind, sigma 0-50): max-unpool encoder-decoder, x1",
}


class UnpoolRestorer(nn.Module):
    """Encoder-decoder with pooling indices, for x1 restoration.

    Args:
        scale: must be 1 (restoration keeps the size).
        channels: image channels in and out.
        features: width of the first level; level ``d`` is ``features * 2 ** d`` wide, up to ``max_features``.
        max_features: widest level.
        depth: number of 2x2 max-pool / unpool levels (2-4).
        convs: 3x3 convolutions per level, in the encoder and in the decoder.
        transpose: make the first conv after each unpool a stride-1 ``ConvTranspose2d`` (DeconvNet).
        skips: add each level's encoder features to its unpooled decoder features (RED-Net).
        block: period in pixels of the compression grid the network is told about (16 for JPEG's
            8x8 blocks and 4:2:0 macroblocks): a learned bias per phase in every full-resolution
            conv. 0: none (denoising has no grid).
        refine: extra 3x3 convs at full resolution, as many after the head as before the tail
            (local detail the pooled levels cannot place exactly). Each starts as the identity,
            so a model grown from weights without them starts out computing what those did.
    """

    def __init__(
        self,
        *,
        scale: int = 1,
        channels: int = 3,
        features: int = 32,
        max_features: int = 96,
        depth: int = 3,
        convs: int = 2,
        transpose: bool = True,
        skips: bool = True,
        block: int = 0,
        refine: int = 0,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, (1,))
        if not 2 <= depth <= 4:
            raise ValueError(f"depth must be 2..4, got {depth}")
        if convs < 1:
            raise ValueError(f"convs must be at least 1, got {convs}")
        if refine < 0:
            raise ValueError(f"refine must be 0 or more, got {refine}")
        if block < 0:
            raise ValueError(f"block must be 0 (none) or a period in pixels, got {block}")
        widths = [min(features * 2**d, max_features) for d in range(depth + 1)]
        self.depth, self.skips, self.block = depth, skips, block
        self.grid = math.lcm(2**depth, block) if block else 2**depth
        self.head = nn.Sequential(
            conv(channels, widths[0], 3), nn.ReLU(inplace=True), *identity_convs(widths[0], refine)
        )
        self.down = nn.ModuleList()  # level d: widths[d] -> widths[d + 1], at 1/2**d resolution, then pooled
        for d in range(depth):
            layers: list[nn.Module] = []
            for i in range(convs):
                layers += [conv(widths[d + 1] if i else widths[d], widths[d + 1], 3), nn.ReLU(inplace=True)]
            self.down.append(nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.up = nn.ModuleList()  # after unpooling to level d: widths[d + 1] -> widths[d]
        for d in range(depth):
            first: nn.Module = (
                nn.ConvTranspose2d(widths[d + 1], widths[d], 3, padding=1)
                if transpose
                else conv(widths[d + 1], widths[d], 3)
            )
            layers = [first, nn.ReLU(inplace=True)]
            for _ in range(convs - 1):
                layers += [conv(widths[d], widths[d], 3), nn.ReLU(inplace=True)]
            if d == 0:
                layers += identity_convs(widths[0], refine)
            self.up.append(nn.Sequential(*layers))
        self.tail = conv(widths[0], channels, 3)
        # Full-resolution convs, in order: head, the first level's encoder, the last decoder stage.
        full_res = [m for stage in (self.head, self.down[0], self.up[0]) for m in stage if not isinstance(m, nn.ReLU)]
        self.phase = nn.ParameterList(
            [nn.Parameter(torch.zeros(m.out_channels, block, block)) for m in full_res] if block else []
        )
        self.receptive_radius = self._radius(convs, refine)

    def _radius(self, convs: int, refine: int) -> int:
        """Input pixels each side an output pixel may read, over every phase of the pooling grid.

        Head, tail and each refine conv read one pixel each. At level ``d`` (cells ``2**d`` pixels wide) every 3x3
        conv reads one cell further, in the encoder and again in the decoder; a value pooled and
        unpooled lands back somewhere in its 2x2 cell, one more cell away: ``(2 convs + 1) 2**d``.
        Measured by perturbing one pixel at every phase (tests/test_receptive_field.py).
        """
        return 2 + 2 * refine + (2 * convs + 1) * (2**self.depth - 1)

    def _full_res(self, stage: nn.Sequential, h: torch.Tensor, biases: list[torch.Tensor]) -> torch.Tensor:
        """Run a full-resolution stage, adding each conv's phase bias before its ReLU."""
        if not biases:
            return stage(h)
        for layer in stage:
            h = layer(h)
            if not isinstance(layer, nn.ReLU):
                add_periodic(h, biases.pop(0))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biases = list(self.phase)
        head = h = self._full_res(self.head, x, biases)
        levels = []  # (encoder features, pooling indices) per level
        for d in range(self.depth):
            features = h = self._full_res(self.down[d], h, biases) if d == 0 else self.down[d](h)
            if min(h.shape[-2:]) < 2:  # nothing left to pool (a 1-px side): the level passes through
                levels.append((features, None))
                continue
            h, indices = self.pool(h)
            levels.append((features, indices))
        for d in reversed(range(self.depth)):
            features, indices = levels[d]
            if indices is not None:
                h = self.unpool(h, indices, output_size=features.shape[-2:])
            if self.skips:
                h = h + features
            h = self._full_res(self.up[d], h, biases) if d == 0 else self.up[d](h)
        if self.skips:
            h = h + head
        return x + self.tail(h)


def identity_convs(width: int, count: int) -> list[nn.Module]:
    """``count`` 3x3 conv + ReLU pairs that start as the identity on the (non-negative) features they follow."""
    layers: list[nn.Module] = []
    for _ in range(count):
        layer = conv(width, width, 3)
        nn.init.dirac_(layer.weight)
        nn.init.zeros_(layer.bias)
        layers += [layer, nn.ReLU(inplace=True)]
    return layers


def add_periodic(h: torch.Tensor, bias: torch.Tensor) -> None:
    """Add ``bias`` (C, P, P), tiled from the first pixel, to ``h`` (N, C, H, W) in place.

    In place and through views (no full-size copy of the bias), keeping ``h``'s memory format;
    the rows and columns past the last whole period take the bias's leading part.
    """
    p = bias.shape[-1]
    n, c, height, width = h.shape
    rows, cols = height - height % p, width - width % p
    if rows and cols:
        h[..., :rows, :cols].view(n, c, rows // p, p, cols // p, p).add_(bias.view(c, 1, p, 1, p))
    if rows < height:  # the last, partial period of rows: only that strip is tiled
        h[..., rows:, :].add_(bias[:, : height - rows].repeat(1, 1, -(-width // p))[..., :width])
    if cols < width:
        h[..., :rows, cols:].add_(bias[:, :, : width - cols].repeat(1, rows // p, 1))


# One architecture, two trained tasks: each name has its own weights and card.
for _task, _description in TASKS.items():
    MODELS.register(_task, kind="learned", scales=(1,), description=_description, task=_task)(UnpoolRestorer)
