"""Tiny random-weight models of spandrel's own architecture classes, saved as community model files.

Shared by tests/test_community.py and bench/community.py. Each is small enough to run
on a CPU in milliseconds, and detected by spandrel from its tensors alone, as a
downloaded file would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


def _builders() -> dict[str, Callable[[], nn.Module]]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.NAFNet import NAFNet
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.PLKSR import PLKSR
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    return {
        "compact": lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4),
        "span": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2),
        "esrgan": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=2, scale=2),
        "plksr": lambda: PLKSR(dim=16, n_blocks=2, upscaling_factor=2),
        "swinir": lambda: SwinIR(
            upscale=2,
            embed_dim=12,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=8,
            mlp_ratio=2,
            upsampler="pixelshuffledirect",
            img_size=32,
        ),
        "hat": lambda: HAT(
            upscale=2,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=8,
            compress_ratio=3,
            squeeze_factor=3,
            mlp_ratio=2,
            upsampler="pixelshuffle",
            img_size=32,
        ),
        "dat": lambda: DAT(
            upscale=2, embed_dim=32, depth=[1], num_heads=[2], split_size=[4, 8], expansion_factor=2, img_size=32
        ),
        "omnisr": lambda: OmniSR(num_in_ch=3, num_out_ch=3, num_feat=16, res_num=1, up_scale=2, window_size=8),
        "nafnet": lambda: NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    }


#: file stem -> (spandrel architecture id, scale, purpose, tiling mode measured at load)
EXPECTED: dict[str, tuple[str, int, str, str]] = {
    "compact": ("Compact", 4, "SR", "exact"),
    "span": ("SPAN", 2, "SR", "exact"),
    "esrgan": ("ESRGAN", 2, "SR", "exact"),
    "plksr": ("PLKSR", 2, "SR", "exact"),
    "swinir": ("SwinIR", 2, "SR", "exact"),
    "hat": ("HAT", 2, "SR", "whole"),
    "dat": ("DAT", 2, "SR", "whole"),
    "omnisr": ("OmniSR", 2, "SR", "whole"),
    "nafnet": ("NAFNet", 1, "Restoration", "exact"),
}


def write_models(folder: Path, names: list[str] | None = None, seed: int = 0) -> list[Path]:
    """Save each named tiny model (default: all) to ``folder/<name>.safetensors``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    builders = _builders()
    paths = []
    for name in names or list(builders):
        torch.manual_seed(seed)
        state = {k: v.contiguous() for k, v in builders[name]().state_dict().items()}
        path = folder / f"{name}.safetensors"
        save_file(state, path)
        paths.append(path)
    return paths


def write_sidecar(path: Path, **fields: object) -> None:
    path.with_suffix(".json").write_text(json.dumps(fields))
