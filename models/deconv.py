"""Transpose-convolution decoder in the style of FSRCNN.

Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network",
ECCV 2016: feature extraction, shrinking, mapping, expanding at LR resolution,
then one ``nn.ConvTranspose2d`` that upsamples, here over a bicubic skip.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from srserve.models.layers import BICUBIC_SKIP_RADIUS, bicubic_skip, check_scale, conv
from srserve.models.registry import MODELS

SCALES = (2, 3, 4)


def deconv_geometry(scale: int, kernel_size: int) -> tuple[int, int]:
    """Padding and output_padding for which a ConvTranspose2d maps H to exactly scale*H.

    Output size is ``(H-1)*s - 2p + k + op`` (dilation 1), so we need
    ``k - 2p + op = s`` with ``0 <= op < s``. The smallest such ``p`` centres the
    kernel on its LR pixel; ``op`` absorbs the parity left over.
    """
    if kernel_size < scale:
        raise ValueError(f"deconv kernel {kernel_size} must be at least the scale {scale}")
    padding = math.ceil((kernel_size - scale) / 2)
    output_padding = scale - kernel_size + 2 * padding
    assert 0 <= output_padding < scale
    return padding, output_padding


def deconv_radius(scale: int, kernel_size: int, padding: int, hr_reach: int = 0) -> int:
    """LR cells each side that one input pixel reaches through the transpose conv.

    Input ``i`` writes outputs ``y = i*s - p + t`` for ``t`` in ``[0, k)``, i.e. the
    cells ``floor((i*s - p)/s) .. floor((i*s - p + k - 1)/s)``; convolutions after it
    at HR reach ``hr_reach`` output pixels further each side.
    """
    return max(math.ceil((padding + hr_reach) / scale), (kernel_size - 1 - padding + hr_reach) // scale)


@MODELS.register(
    "deconv",
    kind="learned",
    scales=SCALES,
    description="FSRCNN-style decoder ending in ConvTranspose2d, residual over bicubic",
)
class DeconvSR(nn.Module):
    """FSRCNN-style network whose last layer is a transpose convolution.

    Args:
        scale: upscale factor, 2, 3 or 4.
        channels: image channels in and out.
        features: width ``d`` of feature extraction and expansion.
        shrink: width ``s`` of the mapping layers.
        num_maps: number ``m`` of 3x3 mapping layers.
        head_kernel: kernel of the feature-extraction layer (odd).
        deconv_kernel: kernel of the transpose convolution (>= scale).
        residual: add a bicubic upscale of the input to the output.
        hr_features: 0: the transpose convolution outputs the image. Otherwise it outputs this many
            channels, and a PReLU and a 3x3 convolution at the output resolution make the image.
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        channels: int = 3,
        features: int = 56,
        shrink: int = 12,
        num_maps: int = 4,
        head_kernel: int = 5,
        deconv_kernel: int = 9,
        residual: bool = True,
        hr_features: int = 0,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.residual = residual
        layers: list[nn.Module] = [conv(channels, features, head_kernel), nn.PReLU(features)]
        layers += [conv(features, shrink, 1), nn.PReLU(shrink)]
        for _ in range(num_maps):
            layers += [conv(shrink, shrink, 3), nn.PReLU(shrink)]
        layers += [conv(shrink, features, 1), nn.PReLU(features)]
        self.body = nn.Sequential(*layers)
        padding, output_padding = deconv_geometry(scale, deconv_kernel)
        self.deconv = nn.ConvTranspose2d(
            features,
            hr_features or channels,
            deconv_kernel,
            stride=scale,
            padding=padding,
            output_padding=output_padding,
        )
        # Identity when hr_features is 0, so a checkpoint without the HR layers keeps its tensor names.
        self.hr: nn.Module = (
            nn.Sequential(nn.PReLU(hr_features), conv(hr_features, channels, 3)) if hr_features else nn.Identity()
        )
        hr_reach = 1 if hr_features else 0
        conv_radius = head_kernel // 2 + num_maps + deconv_radius(scale, deconv_kernel, padding, hr_reach)
        self.receptive_radius = max(conv_radius, BICUBIC_SKIP_RADIUS if residual else 0)

    def deepen(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A shallower model's tensors, renamed for this one, its missing mapping layers as identities.

        Used by ``srtrain --grow`` (:func:`~srserve.models.training.checkpoint.grow_into`). The
        new maps go after the old ones, so the expanding layer and everything after it move up.
        A mapping layer is a 3x3 conv and a PReLU: a centred one-hot kernel, a zero bias and a
        slope of 1 pass its input through, so the deeper model starts out computing what the
        shallower one did, and training moves the new layers from there.
        """
        if "body.2.weight" not in state:  # not a deconv body: grow_into names what does not fit
            return state
        convs = {int(k.split(".")[1]) for k, v in state.items() if k.startswith("body.") and v.dim() == 4}
        old_maps, new_maps = len(convs) - 3, (len(self.body) - 6) // 2
        if old_maps > new_maps:
            raise ValueError(f"cannot grow {old_maps} mapping layers into {new_maps}")
        first_moved, shift = 4 + 2 * old_maps, 2 * (new_maps - old_maps)
        deeper = {}
        for name, tensor in state.items():
            prefix, _, rest = name.partition(".")
            index, _, param = rest.partition(".")
            if prefix == "body" and int(index) >= first_moved:
                name = f"body.{int(index) + shift}.{param}"
            deeper[name] = tensor
        like = state["body.2.weight"]  # the shrinking conv: (shrink, features, 1, 1)
        width = like.shape[0]
        identity = torch.zeros(width, width, 3, 3, dtype=like.dtype, device=like.device)
        identity[range(width), range(width), 1, 1] = 1
        for m in range(old_maps, new_maps):
            at = 4 + 2 * m
            deeper[f"body.{at}.weight"] = identity.clone()
            deeper[f"body.{at}.bias"] = torch.zeros(width, dtype=like.dtype, device=like.device)
            deeper[f"body.{at + 1}.weight"] = torch.ones(width, dtype=like.dtype, device=like.device)
        return deeper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hr(self.deconv(self.body(x)))
        return out + bicubic_skip(x, self.scale) if self.residual else out
