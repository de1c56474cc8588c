"""ESPCN: convolutions at LR resolution, then a sub-pixel (PixelShuffle) upscale.

Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network", CVPR 2016, with two changes that make it
train well on a CPU budget: PReLU activations and a residual over a bicubic skip.
"""

from __future__ import annotations

import torch
from torch import nn

from srserve.models.layers import BICUBIC_SKIP_RADIUS, bicubic_skip, check_scale, conv
from srserve.models.registry import MODELS

SCALES = (2, 3, 4)


@MODELS.register(
    "espcn",
    kind="learned",
    scales=SCALES,
    description="ESPCN: LR convolutions + PixelShuffle, residual over bicubic",
)
class ESPCN(nn.Module):
    """Efficient sub-pixel CNN.

    Args:
        scale: upscale factor, 2, 3 or 4.
        channels: image channels in and out.
        features: width of the first layer.
        mid_features: width of the hidden 3x3 layers.
        num_mid: number of hidden 3x3 layers.
        head_kernel: kernel of the first layer (odd).
        residual: add a bicubic upscale of the input to the output.
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        channels: int = 3,
        features: int = 64,
        mid_features: int = 32,
        num_mid: int = 2,
        head_kernel: int = 5,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.residual = residual
        layers: list[nn.Module] = [conv(channels, features, head_kernel), nn.PReLU(features)]
        width = features
        for _ in range(num_mid):
            layers += [conv(width, mid_features, 3), nn.PReLU(mid_features)]
            width = mid_features
        layers += [conv(width, channels * scale * scale, 3)]
        self.body = nn.Sequential(*layers)
        # (C * r^2, H, W) -> (C, rH, rW): output cell (i, j) reads LR pixel (i, j) only.
        self.shuffle = nn.PixelShuffle(scale)
        conv_radius = head_kernel // 2 + num_mid + 1
        self.receptive_radius = max(conv_radius, BICUBIC_SKIP_RADIUS if residual else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.body(x))
        return out + bicubic_skip(x, self.scale) if self.residual else out
