"""Y-channel metrics, the protocol, `sreval`, and the published bicubic numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srserve.models.evaluation import cli as sreval
from srserve.models.evaluation.metrics import psnr, rgb_to_y, ssim, y_psnr_ssim
from srserve.models.evaluation.protocol import list_images, load_rgb, mean, pair, pil_bicubic, score
from srserve.models.training.data import split
from tests.conftest import DATASETS, WEIGHTS, smooth_image


def test_rgb_to_y_matches_matlab_coefficients() -> None:
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], dtype=np.uint8)
    assert rgb_to_y(px).tolist() == [[16.0, 235.0, 81.0, round(16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255)]]


def test_psnr_values() -> None:
    a = np.zeros((4, 4))
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 255.0 / 10) == pytest.approx(20.0)


def test_ssim_identity_and_order() -> None:
    y = rgb_to_y(smooth_image(40, 40))
    assert ssim(y, y) == pytest.approx(1.0)
    noisy = np.clip(y + np.random.default_rng(0).normal(0, 10, y.shape), 0, 255)
    noisier = np.clip(y + np.random.default_rng(0).normal(0, 30, y.shape), 0, 255)
    assert 0 < ssim(y, noisier) < ssim(y, noisy) < 1


def test_protocol_modcrops_and_shaves() -> None:
    hr = Image.fromarray(smooth_image(50, 47))
    lr, cropped = pair(hr, 3)
    assert cropped.shape == (48, 45, 3) and lr.shape == (16, 15, 3)
    # A perfect upscaler scores infinity even though the borders would differ.
    out = cropped.copy()
    out[:3] = 0
    assert y_psnr_ssim(out, cropped, border=3)[0] == math.inf


def test_sreval_table_and_comparison(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    assert (
        sreval.main(
            [
                str(image_folder),
                "--models",
                "espcn",
                "--scales",
                "2",
                "--weights",
                str(WEIGHTS),
                "--compare",
                str(out),
                "--crop",
                "32",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "bicubic(PIL)" in text and "espcn" in text
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4
    with Image.open(pngs[0]) as im:
        assert im.size == (3 * 32 + 2 * 4, 32)


def test_sreval_rejects_empty_folder(tmp_path: Path) -> None:
    assert sreval.main([str(tmp_path)]) == 2


def test_sreval_held_out_and_downscaled(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--held-out scores exactly srtrain's validation images; --downscale box-averages them first."""
    out = tmp_path / "cmp"
    args = [str(image_folder), "--models", "espcn", "--scales", "2", "--weights", str(WEIGHTS)]
    assert sreval.main([*args, "--held-out", "--val-count", "2", "--downscale", "2", "--compare", str(out)]) == 0
    assert "images: the 2 images srtrain holds out, box-averaged 2x smaller" in capsys.readouterr().out
    held_out = split(image_folder, 2)[1]
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == sorted(f"{f.stem}_espcn_x2.png" for f in held_out)
    for f, png in zip(sorted(held_out), pngs, strict=True):
        with load_rgb(f) as full, Image.open(png) as im:
            side = min(s // 2 - s // 2 % 2 for s in full.size)  # half size, modcropped to x2
            assert im.size == (3 * side + 2 * 4, side)


@pytest.mark.parametrize("bad", [["--downscale", "0"], ["--held-out", "--val-count", "4"]])
def test_sreval_rejects_bad_selection(image_folder: Path, bad: list[str], capsys: pytest.CaptureFixture) -> None:
    assert sreval.main([str(image_folder), "--models", "espcn", "--scales", "2", *bad]) == 2
    assert capsys.readouterr().err.startswith("sreval: ")


@pytest.mark.dataset
def test_bicubic_reproduces_the_published_set5_numbers() -> None:
    images = [(p.name, load_rgb(p)) for p in list_images(DATASETS / "set5")]
    for scale, expected in [(2, 33.64), (3, 30.38), (4, 28.42)]:
        assert mean(score(pil_bicubic, images, scale))[0] == pytest.approx(expected, abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "level"), [("dejpeg", ["--quality", "20"]), ("denoise", ["--sigma", "25"])])
def test_sreval_restoration_tasks(task: str, level: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, out = tmp_path / "images", tmp_path / "cmp"
    folder.mkdir()
    for i in range(2):  # small: CBM3D takes seconds per image
        Image.fromarray(smooth_image(40, 36, seed=i)).save(folder / f"{i}.png")
    args = [str(folder), "--task", task, *level, "--weights", str(WEIGHTS), "--compare", str(out), "--crop", "32"]
    assert sreval.main(args) == 0
    text = capsys.readouterr().out
    assert "RGB PSNR" in text and f"{task} input" in text and f"\n{task} " in text
    if task == "denoise":
        assert "\nCBM3D " in text  # the baseline of the target (bm3d comes with the test extra)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2  # degraded | restored | truth, per image
    with Image.open(pngs[0]) as im:
        assert im.size == (3 * 32 + 2 * 4, 32)
