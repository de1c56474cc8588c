"""Each model's declared receptive radius equals the one measured by perturbing a pixel."""

from __future__ import annotations

import pytest
import torch

from srserve.models import MODELS

SIZE = 33  # LR side; the perturbed pixel sits in the middle, far from every border


def measured_radius(model: torch.nn.Module, scale: int) -> int:
    """Largest LR distance between the perturbed pixel and an output cell it changed."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, SIZE, SIZE, dtype=torch.float64)
    c = SIZE // 2
    y = x.clone()
    y[..., c, c] += 0.5
    with torch.no_grad():
        diff = (model(x) - model(y)).abs().amax(dim=1)[0]
    rows, cols = torch.nonzero(diff > 1e-12, as_tuple=True)
    cells = torch.stack([rows // scale, cols // scale])
    return int((cells - c).abs().max())


CASES = [
    ("espcn", {}),
    ("espcn", {"features": 16, "mid_features": 8, "num_mid": 3}),
    ("espcn", {"head_kernel": 3, "num_mid": 0, "residual": False}),
    ("deconv", {}),
    ("deconv", {"features": 16, "shrink": 8, "num_maps": 2, "deconv_kernel": 5}),
    ("deconv", {"num_maps": 0, "head_kernel": 1, "residual": False}),
    ("deconv", {"features": 8, "shrink": 4, "num_maps": 1, "deconv_kernel": 12}),
    ("deconv", {"features": 8, "shrink": 4, "num_maps": 1, "hr_features": 4}),
    ("deconv", {"features": 8, "shrink": 4, "num_maps": 0, "head_kernel": 1, "residual": False, "hr_features": 4}),
    ("deconv", {"features": 8, "shrink": 4, "deconv_kernel": 4, "residual": False, "hr_features": 4}),
]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_learned_radius(name: str, kwargs: dict, scale: int) -> None:
    model = MODELS.build(name, scale=scale, **kwargs).double().eval()
    # Random init can leave PReLU slopes/biases that hide nothing: the radius is structural.
    assert measured_radius(model, scale) == model.receptive_radius


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic", "area"])
def test_resizer_radius(mode: str, scale: int) -> None:
    model = MODELS.build(mode, scale=scale)
    assert measured_radius(model, scale) == model.receptive_radius
