"""Windows padded to a shared shape that still compute exactly what the whole image would.

Groundwork for shape buckets (issue 30): windows of different images batch only
when they share a shape, so small images must be padded up to one. Padding alone
changes the answer near the padded edge: whole-image inference sees zeros beyond
the image at *every* convolution (its zero padding), while a padded window's later
layers see what earlier layers computed on the padding. So each convolution's
input is multiplied by a mask that is zero outside each sample's valid region
(forward pre-hooks, per batch), which gives every layer the zeros whole-image
inference gives it. The input itself is padded by repeating its edge, which is
what bicubic and bilinear interpolation (``align_corners=False``) read beyond the
border, so interpolated skips agree too.

Which models this holds for is measured, not listed: :func:`pads_exactly`
compares padded and whole outputs of the model itself (pooling and attention
layers, for example, would fail it and keep exact-fit windows).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

#: Layers whose input is masked: their zero padding is what whole-image inference sees at a border.
MASKED = (nn.Conv2d, nn.ConvTranspose2d)


def _mask(
    valid: Sequence[tuple[int, int]], window: tuple[int, int], shape: torch.Size, like: torch.Tensor
) -> torch.Tensor:
    """(N, 1, H, W) ones inside each sample's valid region scaled to this tensor's resolution."""
    n, _, h, w = shape
    if n != len(valid):
        raise ValueError(f"a batch of {n} with valid regions for {len(valid)}")
    rows = torch.arange(h, device=like.device)[None, :, None]
    cols = torch.arange(w, device=like.device)[None, None, :]
    vh = torch.tensor([-(-v[0] * h // window[0]) for v in valid], device=like.device)[:, None, None]
    vw = torch.tensor([-(-v[1] * w // window[1]) for v in valid], device=like.device)[:, None, None]
    return ((rows < vh) & (cols < vw)).to(like.dtype)[:, None]


@contextmanager
def masked(module: nn.Module, valid: Sequence[tuple[int, int]], window: tuple[int, int]) -> Iterator[None]:
    """Within the block, ``module``'s convolutions see zeros outside each sample's ``valid`` (h, w),
    counted from the top-left of a batch of ``window``-sized inputs."""
    cache: dict[tuple, torch.Tensor] = {}

    def pre(_: nn.Module, args: tuple) -> tuple:
        x = args[0]
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in cache:
            cache[key] = _mask(valid, window, x.shape, x)
        return (x * cache[key], *args[1:])

    handles = [m.register_forward_pre_hook(pre) for m in module.modules() if isinstance(m, MASKED)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def pad_to(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``(N, C, h, w)`` padded at the bottom and right to ``window`` by repeating its edge."""
    dh, dw = window[0] - x.shape[-2], window[1] - x.shape[-1]
    if dh < 0 or dw < 0:
        raise ValueError(f"{tuple(x.shape[-2:])} does not fit in {window}")
    return F.pad(x, (0, dw, 0, dh), mode="replicate") if dh or dw else x


def run_padded(module: nn.Module, images: Sequence[torch.Tensor], window: tuple[int, int]) -> list[torch.Tensor]:
    """Each ``(C, h, w)`` image padded to ``window``, all in one batch; outputs cropped to each image."""
    valid = [tuple(im.shape[-2:]) for im in images]
    batch = torch.cat([pad_to(im[None], window) for im in images])
    with masked(module, valid, window):
        out = module(batch)
    sh, sw = out.shape[-2] / window[0], out.shape[-1] / window[1]
    return [o[:, : round(h * sh), : round(w * sw)] for o, (h, w) in zip(out, valid, strict=True)]


def pads_exactly(module: nn.Module, *, tolerance: float = 1e-9, seed: int = 0) -> bool:
    """Whether ``module``'s padded, masked windows give its whole-image output.

    A property of the architecture, not of a device's arithmetic: judged on a float64 copy on the
    CPU, where the two agree to rounding (1e-15) or differ structurally (pooling: 1e-4 and more), so
    a GPU's TF32 convolutions cannot blur the answer.
    """
    probe = copy.deepcopy(module).to("cpu", torch.float64).eval()
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, h, w, generator=gen, dtype=torch.float64) for h, w in ((21, 34), (40, 17))]
    with torch.inference_mode():
        whole = [probe(im[None])[0] for im in images]
        padded = run_padded(probe, images, (48, 48))
    return all(
        a.shape == b.shape and (a - b).abs().max().item() <= tolerance for a, b in zip(whole, padded, strict=True)
    )
