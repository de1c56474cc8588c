"""Padded, masked windows (service/padding.py): images of different sizes in one batch of one shape
compute what each whole image would, for the models the measurement says so; the rest are told apart."""

from __future__ import annotations

import pytest
import torch

from srserve.models import MODELS
from srserve.service.padding import masked, pads_exactly, run_padded

EXACT = [("espcn", 2), ("espcn", 3), ("deconv", 2), ("deconv", 4), ("bicubic", 2), ("bilinear", 3), ("nearest", 2)]


@pytest.mark.parametrize(("name", "scale"), EXACT)
def test_images_of_many_sizes_in_one_padded_batch_equal_their_whole_outputs(name: str, scale: int) -> None:
    torch.manual_seed(1)
    model = MODELS.build(name, scale=scale).eval()
    assert pads_exactly(model)
    gen = torch.Generator().manual_seed(2)
    images = [torch.rand(3, h, w, generator=gen) for h, w in ((13, 50), (64, 64), (33, 7))]
    with torch.inference_mode():
        padded = run_padded(model, images, (64, 64))
        for image, out in zip(images, padded, strict=True):
            whole = model(image[None])[0]
            assert out.shape == whole.shape
            assert (out - whole).abs().max().item() < 1e-4


@pytest.mark.parametrize("task", ["dejpeg", "denoise"])
def test_pooling_restorers_are_measured_not_to_pad_exactly(task: str) -> None:
    """MaxPool indices and MaxUnpool see the padding: these keep windows that fit the image."""
    torch.manual_seed(0)
    assert not pads_exactly(MODELS.build(task, scale=1).eval())


def test_the_masks_go_with_the_block() -> None:
    model = MODELS.build("espcn", scale=2).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        before = model(x)
        with masked(model, [(8, 8)], (16, 16)):
            inside = model(x)
        after = model(x)
    assert not torch.equal(before, inside)  # the mask acted
    assert torch.equal(before, after)  # and left nothing behind
