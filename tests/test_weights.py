"""Safetensors + card: round trip, hash verification, no pickle, and the shipped cards."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from srserve.models import MODELS
from srserve.models.weights import (
    WeightsError,
    available,
    count_parameters,
    load_model,
    read_card,
    save_weights,
    sha256_file,
    update_card,
)
from tests.conftest import WEIGHTS


def _save(tmp_path: Path, name: str = "espcn", scale: int = 2) -> Path:
    model = MODELS.build(name, scale=scale, features=8, mid_features=4, num_mid=1)
    path = tmp_path / f"{name}_x{scale}.safetensors"
    card = {
        "architecture": name,
        "kwargs": {"scale": scale, "features": 8, "mid_features": 4, "num_mid": 1},
        "scale": scale,
    }
    save_weights(model, path, card)
    return path


def test_round_trip(tmp_path: Path) -> None:
    path = _save(tmp_path)
    card = read_card(path)
    assert card["sha256"] == sha256_file(path)
    model, loaded_card = load_model(path)
    assert loaded_card == card
    assert count_parameters(model) == card["parameters"]
    assert not model.training
    assert available(tmp_path) == [("espcn", 2, path)]


def test_saved_files_take_the_umask_like_any_file(tmp_path: Path) -> None:
    """Not safetensors' 0600: a server running as another user must be able to read them."""
    old = os.umask(0o022)
    try:
        path = _save(tmp_path)
    finally:
        os.umask(old)
    for saved in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(saved.stat().st_mode) == 0o644, saved


def test_update_card_keeps_the_hash(tmp_path: Path) -> None:
    path = _save(tmp_path)
    update_card(path, notes="below target")
    card = read_card(path)
    assert card["notes"] == "below target" and card["sha256"] == sha256_file(path)
    load_model(path)


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_model(path)


def test_missing_card_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match="no card"):
        load_model(path)


def test_pickle_is_never_loaded(tmp_path: Path) -> None:
    """A pickle disguised as a weights file, with a card holding its real hash, is not unpickled."""

    class Boom:
        def __reduce__(self):  # would run at unpickling time
            return (Path(tmp_path / "pwned").touch, ())

    path = tmp_path / "espcn_x2.safetensors"
    path.write_bytes(pickle.dumps({"w": Boom()}))
    card = {"architecture": "espcn", "kwargs": {"scale": 2}, "scale": 2, "sha256": sha256_file(path)}
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do, as long as nothing ran
        load_model(path)
    assert not (tmp_path / "pwned").exists()


SHIPPED = sorted(WEIGHTS.glob("*.safetensors"))


def test_every_learned_model_ships_every_scale() -> None:
    have = {(arch, scale) for arch, scale, _ in available(WEIGHTS)}
    assert have == {(n, s) for n in MODELS.names("learned") for s in MODELS.get(n).scales}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_card_matches_model_and_file(path: Path) -> None:
    card = read_card(path)
    assert card["sha256"] == sha256_file(path)
    assert card["file"] == path.name and card["bytes"] == path.stat().st_size
    model, _ = load_model(path)
    assert card["parameters"] == count_parameters(model)
    assert card["scale"] == card["kwargs"]["scale"] == model.scale
    assert path.stem == f"{card['architecture']}_x{card['scale']}"
    assert card["receptive_radius"] == model.receptive_radius
    if card["architecture"] == "deconv":
        assert card["parameters"] <= 100_000
    training = card["training"]
    for key in ("data", "recipe", "wall_time_s", "steps_run", "command"):
        assert key in training
    if card["scale"] == 1:  # restoration: RGB numbers at the task's level, its degradation, its CPU cost
        assert card["task"] == card["architecture"] and card["parameters"] < 1_000_000
        assert training["data"]["degradation"]["task"] == card["task"]
        assert card["metrics"]["validation"]["psnr_rgb"] > 20
        assert card["cpu_seconds_per_megapixel"]["seconds"] > 0
    else:
        assert card["metrics"]["validation"]["psnr_y"] > 20
    if "quality" in card:  # a claimed target status agrees with the recorded Set5 number (re-measured below)
        set5 = card["metrics"]["set5"]
        got = set5.get("psnr_y", set5.get("psnr_rgb"))
        quality = card["quality"]
        if "set5_target_gain_db" in quality:  # a gain over the input: the unrounded one (30.512 - 29.012 may be 1.499)
            assert quality["met"] == (set5["gain_db"] >= quality["set5_target_gain_db"])
        else:
            assert quality["met"] == (round(got, 3) >= quality["set5_psnr_target"])
    # The model runs and keeps the size contract.
    assert model(torch.rand(1, 3, 9, 7)).shape == (1, 3, 9 * card["scale"], 7 * card["scale"])


@pytest.mark.dataset
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_card_psnr_reproduces_on_set5(path: Path) -> None:
    """The Set5 numbers in each card are what the weights measure under the protocol."""
    from srserve.models.evaluation.protocol import list_images, load_rgb, mean, score
    from srserve.models.imageops import upscale_array
    from tests.conftest import DATASETS

    card = read_card(path)
    model, _ = load_model(path)
    if card["scale"] == 1:  # restoration: the degraded set5 at the task's level, RGB
        from srserve.models.training.degrade import TASKS
        from srserve.models.training.restoration import evaluate

        measured, recorded = (
            evaluate(model, TASKS[card["task"]], DATASETS / "set5", torch.device("cpu")),
            card["metrics"]["set5"],
        )
        assert measured["psnr_rgb"] == pytest.approx(recorded["psnr_rgb"], abs=0.005)
        assert measured["ssim_rgb"] == pytest.approx(recorded["ssim_rgb"], abs=0.0005)
        assert measured["input_psnr_rgb"] == recorded["input_psnr_rgb"]  # the degradation is deterministic
        assert measured["gain_db"] == pytest.approx(recorded["gain_db"], abs=0.005)  # what "met" is judged on
        return
    images = [(p.name, load_rgb(p)) for p in list_images(DATASETS / "set5")]
    psnr, ssim = mean(score(lambda lr, _s: upscale_array(model, lr), images, card["scale"]))
    assert psnr == pytest.approx(card["metrics"]["set5"]["psnr_y"], abs=0.005)
    assert ssim == pytest.approx(card["metrics"]["set5"]["ssim_y"], abs=0.0005)
