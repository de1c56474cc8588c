"""The strict registry: known names, unknown and duplicate names fail loudly."""

from __future__ import annotations

import pytest
from torch import nn

from srserve.models import MODELS
from srserve.models.registry import DuplicateModelError, ModelSpec, Registry, UnknownModelError


def test_every_architecture_is_registered() -> None:
    assert MODELS.names("resize") == ["area", "bicubic", "bilinear", "nearest", "nearest-exact"]
    assert MODELS.names("learned") == ["deconv", "dejpeg", "denoise", "espcn"]
    for name in ("deconv", "espcn"):
        assert MODELS.get(name).scales == (2, 3, 4) and MODELS.get(name).task == "upscale"
    for name in ("dejpeg", "denoise"):
        assert MODELS.get(name).scales == (1,) and MODELS.get(name).task == name


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        MODELS.build("esrgan", scale=2)
    message = str(err.value)
    assert "esrgan" in message
    for name in MODELS.names():
        assert name in message


def test_duplicate_name_fails() -> None:
    registry = Registry()
    registry.add(ModelSpec("a", nn.Identity, "learned"))
    with pytest.raises(DuplicateModelError, match="'a'"):
        registry.add(ModelSpec("a", nn.Identity, "learned"))
    with pytest.raises(DuplicateModelError):
        MODELS.register("espcn", kind="learned")(nn.Identity)


@pytest.mark.parametrize("name", ["espcn", "deconv"])
def test_learned_models_reject_unsupported_scales(name: str) -> None:
    with pytest.raises(ValueError, match=r"\[2, 3, 4\]"):
        MODELS.build(name, scale=5)


@pytest.mark.parametrize("name", ["espcn", "deconv"])
def test_constructors_are_keyword_only(name: str) -> None:
    with pytest.raises(TypeError):
        MODELS.get(name).builder(2)
