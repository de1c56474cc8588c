"""`srtrain --init-from --grow`: a narrower model's weights embedded in a wider one, output unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from srserve.models.registry import MODELS
from srserve.models.training import cli as srtrain
from srserve.models.training.checkpoint import grow_into
from srserve.models.weights import read_card

WIDENINGS = [
    # transposed convs (in, out) inside, skips adding level features: every level widens
    ("dejpeg", {"features": 4, "max_features": 8}, {"features": 8, "max_features": 16}),
    ("denoise", {"features": 4, "max_features": 8, "transpose": False}, {"features": 6, "transpose": False}),
    # per-channel PReLU, a transposed conv that grows only its input side, an HR stage
    ("deconv", {"features": 8, "shrink": 4, "hr_features": 2}, {"features": 12, "shrink": 6, "hr_features": 4}),
    ("espcn", {"features": 8, "mid_features": 4, "num_mid": 1}, {"features": 16, "mid_features": 8, "num_mid": 1}),
]


@pytest.mark.parametrize(("name", "narrow", "wide"), WIDENINGS, ids=[w[0] for w in WIDENINGS])
def test_the_grown_model_computes_what_the_narrow_one_did(name: str, narrow: dict, wide: dict) -> None:
    scale = MODELS.get(name).scales[0]
    torch.manual_seed(0)
    small = MODELS.build(name, scale=scale, **narrow).eval()
    for p in small.parameters():  # trained-looking weights, not the initialisation's
        p.data.normal_(0, 0.3)
    torch.manual_seed(1)
    big = MODELS.build(name, scale=scale, **wide).eval()
    copied = grow_into(small.state_dict(), big)
    assert sorted(copied) == sorted(small.state_dict())
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
    x = torch.rand(2, 3, 21, 34)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)
    # The new channels take part: moving only the new entries (outside the old corners) changes the output.
    narrow_shapes = {k: v.shape for k, v in small.state_dict().items()}
    for name, p in big.named_parameters():
        noise = torch.randn_like(p) * 0.05
        if name in narrow_shapes:
            noise[tuple(slice(0, n) for n in narrow_shapes[name])] = 0
        p.data.add_(noise)
    with torch.no_grad():
        assert not torch.allclose(big(x), small(x), atol=1e-3)


DEEPENINGS = [
    # deconv: more mapping layers, inserted as identities; then deeper and wider at once, with an HR stage
    ({"features": 8, "shrink": 4, "num_maps": 2}, {"features": 8, "shrink": 4, "num_maps": 4}),
    (
        {"features": 8, "shrink": 4, "num_maps": 0, "hr_features": 2},
        {"features": 12, "shrink": 6, "num_maps": 3, "hr_features": 2},
    ),
]


@pytest.mark.parametrize(("narrow", "wide"), DEEPENINGS, ids=["deeper", "deeper-and-wider"])
def test_a_deepened_deconv_computes_what_the_shallow_one_did(narrow: dict, wide: dict) -> None:
    torch.manual_seed(0)
    small = MODELS.build("deconv", scale=3, **narrow).eval()
    for p in small.parameters():
        p.data.normal_(0, 0.3)
    big = MODELS.build("deconv", scale=3, **wide).eval()
    assert big.receptive_radius > small.receptive_radius
    copied = grow_into(small.state_dict(), big)
    added = 3 * (wide["num_maps"] - narrow["num_maps"])  # weight, bias, PReLU slope per new map
    assert len(copied) == len(small.state_dict()) + added
    x = torch.rand(2, 3, 17, 30)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)
        # The new maps are real layers: moving one changes the output.
        new_map = big.body[4 + 2 * narrow["num_maps"]]
        new_map.weight.add_(torch.randn_like(new_map.weight) * 0.05)
        assert not torch.allclose(big(x), small(x), atol=1e-3)


def test_a_deeper_source_does_not_fit_a_shallower_deconv() -> None:
    deep = MODELS.build("deconv", scale=2, features=8, shrink=4, num_maps=3)
    shallow = MODELS.build("deconv", scale=2, features=8, shrink=4, num_maps=1)
    with pytest.raises(ValueError, match="cannot grow 3 mapping layers into 1"):
        grow_into(deep.state_dict(), shallow)


def test_a_source_that_does_not_fit_is_refused() -> None:
    wide = MODELS.build("espcn", scale=2, features=16, mid_features=8, num_mid=1)
    narrow = MODELS.build("espcn", scale=2, features=8, mid_features=4, num_mid=1)
    refusal = r"cannot grow body.0.weight of shape \(16, 3, 5, 5\) into shape \(8, 3, 5, 5\)"
    with pytest.raises(ValueError, match=refusal):
        grow_into(wide.state_dict(), narrow)
    deeper = MODELS.build("espcn", scale=2, features=8, mid_features=4, num_mid=2)
    with pytest.raises(ValueError, match="into nothing"):
        grow_into(deeper.state_dict(), narrow)


def test_srtrain_grow_records_it_in_the_card(image_folder: Path, tmp_path: Path) -> None:
    small = MODELS.build("espcn", scale=2, features=8, mid_features=4, num_mid=1)
    source = tmp_path / "narrow.safetensors"
    save_file(small.state_dict(), str(source))
    common = ["espcn", "--scale", "2", "--data", str(image_folder), "--eval-dir", str(tmp_path / "absent")]
    common += ["--patch", "8", "--batch", "2", "--val-count", "1", "--quiet", "--threads", "1"]
    args = [*common, "--arch", "features=16", "mid_features=8", "num_mid=1", "--init-from", str(source)]
    args += ["--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run"), "--steps", "1", "--val-every", "1"]
    assert srtrain.main([*args, "--grow"]) == 0
    init = read_card(tmp_path / "out" / "espcn_x2.safetensors")["training"]["recipe"]["extra"]["init_from"]
    assert init["grown"] is True and init["tensors"] == len(small.state_dict())


def test_grow_needs_init_from_that_fits(image_folder: Path, tmp_path: Path) -> None:
    assert srtrain.main(["espcn", "--scale", "2", "--data", str(image_folder), "--grow"]) == 2
    wide = tmp_path / "wide.safetensors"
    save_file(MODELS.build("espcn", scale=2).state_dict(), str(wide))
    args = ["espcn", "--scale", "2", "--data", str(image_folder), "--arch", "features=8", "mid_features=4"]
    assert srtrain.main([*args, "--init-from", str(wide), "--grow"]) == 2


def test_growing_into_the_same_width_is_a_plain_copy() -> None:
    """So a GROW stage in train_weights.sh works whether or not the stage before it widened."""
    source = MODELS.build("dejpeg", features=4, max_features=8).state_dict()
    same = MODELS.build("dejpeg", features=4, max_features=8)
    assert sorted(grow_into(source, same)) == sorted(source)
    assert all(torch.equal(v, source[k]) for k, v in same.state_dict().items())
