"""Training pairs: LR made from each whole HR image as the protocol makes it,
then aligned random patches with the 8 flips/rotations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srserve.models.evaluation.protocol import list_images, load_rgb, pair

#: Seed of the train/validation split, fixed so that every run holds out the same images.
SPLIT_SEED = 20121
#: Images held out for validation unless told otherwise (srtrain and sreval --held-out agree).
VAL_COUNT = 6


@dataclass
class PairSet:
    """LR/HR uint8 CHW tensors of a set of images at one scale."""

    names: list[str]
    lr: list[torch.Tensor]
    hr: list[torch.Tensor]


def split(folder: Path, val_count: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split of ``folder`` into (train, validation) files."""
    files = list_images(folder)
    if not 0 <= val_count < len(files):
        raise ValueError(f"cannot hold out {val_count} of {len(files)} images")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    val = sorted(files[i] for i in order[:val_count])
    train = sorted(files[i] for i in order[val_count:])
    return train, val


def load_hr(path: Path, shrink: int = 1) -> Image.Image:
    """A training image as RGB, box-averaged ``shrink`` times smaller first when asked: each
    output pixel the mean of ``shrink``^2, which also averages away most of a JPEG's artifacts."""
    image = load_rgb(path)
    return image.reduce(shrink) if shrink > 1 else image


def rescaled(image: Image.Image, factor: float) -> Image.Image:
    """``image`` resized by ``factor`` (< 1) with Pillow's antialiased bicubic."""
    w, h = image.size
    return image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BICUBIC)


def training_images(
    files: list[Path], shrink: int = 1, rescales: tuple[float, ...] = ()
) -> Iterator[tuple[str, Image.Image]]:
    """(name, image) of each file, then of its copies resized by each of ``rescales``: FSRCNN's scale
    augmentation (Dong et al. 2016), more scenes at other frequencies from the same few photos,
    their JPEG artifacts shrunk with them."""
    for f in files:
        image = load_hr(f, shrink)
        yield f.name, image
        for factor in rescales:
            yield f"{f.name}@{factor:g}", rescaled(image, factor)


def load_pairs(files: list[Path], scale: int, shrink: int = 1, rescales: tuple[float, ...] = ()) -> PairSet:
    """The (LR, HR) pairs of :func:`training_images`."""
    names, lrs, hrs = [], [], []
    for name, image in training_images(files, shrink, rescales):
        lr, hr = pair(image, scale)
        names.append(name)
        lrs.append(torch.from_numpy(lr.copy()).permute(2, 0, 1).contiguous())
        hrs.append(torch.from_numpy(hr.copy()).permute(2, 0, 1).contiguous())
    return PairSet(names, lrs, hrs)


class PatchSampler:
    """Draws batches of aligned (LR, HR) float patches from a :class:`PairSet`.

    Args:
        pairs: the training images at one scale.
        scale: upscale factor of the pairs.
        patch: LR patch side in pixels.
        batch: patches per batch.
        generator: the only source of randomness, so runs repeat and resume exactly.
    """

    def __init__(self, pairs: PairSet, *, scale: int, patch: int, batch: int, generator: torch.Generator) -> None:
        usable = [i for i, t in enumerate(pairs.lr) if min(t.shape[-2:]) >= patch]
        if not usable:
            raise ValueError(f"no training image has an LR side of at least {patch} px")
        self.pairs, self.scale, self.patch, self.batch = pairs, scale, patch, batch
        self.usable = usable
        # Sample images in proportion to their area so every pixel is equally likely.
        self.weights = torch.tensor([float(pairs.lr[i].shape[-1] * pairs.lr[i].shape[-2]) for i in usable])
        self.generator = generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        p, s = self.patch, self.scale
        picks = torch.multinomial(self.weights, self.batch, replacement=True, generator=self.generator)
        lrs, hrs = [], []
        for k in picks.tolist():
            lr_img, hr_img = self.pairs.lr[self.usable[k]], self.pairs.hr[self.usable[k]]
            y = self._randint(lr_img.shape[-2] - p + 1)
            x = self._randint(lr_img.shape[-1] - p + 1)
            lr = lr_img[:, y : y + p, x : x + p]
            hr = hr_img[:, y * s : (y + p) * s, x * s : (x + p) * s]
            aug = self._randint(8)
            lrs.append(dihedral(lr, aug))
            hrs.append(dihedral(hr, aug))
        return torch.stack(lrs).float().div_(255.0), torch.stack(hrs).float().div_(255.0)


def dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a CHW tensor (k in 0..7)."""
    if k & 4:
        t = t.transpose(-2, -1)
    if k & 2:
        t = t.flip(-2)
    if k & 1:
        t = t.flip(-1)
    return t
