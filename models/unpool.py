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

Pooling makes the network shift-equivariant only by multiples of
``2 ** depth`` (its :attr:`grid`): tiles must start on that grid.
"""

from __future__ import annotations

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
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, (1,))
        if not 2 <= depth <= 4:
            raise ValueError(f"depth must be 2..4, got {depth}")
        if convs < 1:
            raise ValueError(f"convs must be at least 1, got {convs}")
        widths = [min(features * 2**d, max_features) for d in range(depth + 1)]
        self.depth, self.grid, self.skips = depth, 2**depth, skips
        self.head = nn.Sequential(conv(channels, widths[0], 3), nn.ReLU(inplace=True))
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
            self.up.append(nn.Sequential(*layers))
        self.tail = conv(widths[0], channels, 3)
        self.receptive_radius = self._radius(convs)

    def _radius(self, convs: int) -> int:
        """Input pixels each side an output pixel may read, over every phase of the pooling grid.

        Head and tail read one pixel each. At level ``d`` (cells ``2**d`` pixels wide) every 3x3
        conv reads one cell further, in the encoder and again in the decoder; a value pooled and
        unpooled lands back somewhere in its 2x2 cell, one more cell away: ``(2 convs + 1) 2**d``.
        Measured by perturbing one pixel at every phase (tests/test_receptive_field.py).
        """
        return 2 + (2 * convs + 1) * (2**self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = h = self.head(x)
        levels = []  # (encoder features, pooling indices) per level
        for d in range(self.depth):
            features = h = self.down[d](h)
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
            h = self.up[d](h)
        if self.skips:
            h = h + head
        return x + self.tail(h)


# One architecture, two trained tasks: each name has its own weights and card.
for _task, _description in TASKS.items():
    MODELS.register(_task, kind="learned", scales=(1,), description=_description, task=_task)(UnpoolRestorer)
