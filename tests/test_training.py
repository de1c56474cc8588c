"""`srtrain` end to end on tiny generated images: card, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from srserve.models.evaluation.protocol import load_rgb
from srserve.models.training import cli as srtrain
from srserve.models.training.data import PatchSampler, dihedral, load_pairs, split
from srserve.models.training.restoration import load_images
from srserve.models.weights import load_model, read_card

TINY = [
    "--arch",
    "features=8",
    "mid_features=4",
    "num_mid=1",
    "--patch",
    "8",
    "--batch",
    "2",
    "--val-count",
    "1",
    "--quiet",
    "--threads",
    "1",
]


def run(folder: Path, tmp: Path, name: str, *extra: str) -> Path:
    out = tmp / name
    code = srtrain.main(
        [
            "espcn",
            "--scale",
            "2",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--run-dir",
            str(tmp / f"run-{name}"),
            "--eval-dir",
            str(tmp / "absent"),
            *TINY,
            *extra,
        ]
    )
    assert code == 0
    return out / "espcn_x2.safetensors"


def test_train_writes_loadable_weights_and_card(image_folder: Path, tmp_path: Path) -> None:
    path = run(image_folder, tmp_path, "a", "--steps", "4", "--val-every", "2")
    _model, card = load_model(path)
    assert card["training"]["steps_run"] == 4
    assert card["training"]["data"] == {"folder": "images", "train_images": 3, "validation_images": 1}
    assert card["training"]["recipe"]["patch"] == 8
    assert card["metrics"]["validation"]["step"] in (2, 4)
    assert card["kwargs"] == {"features": 8, "mid_features": 4, "num_mid": 1, "scale": 2}


def test_same_seed_same_weights(image_folder: Path, tmp_path: Path) -> None:
    a = load_file(str(run(image_folder, tmp_path, "a", "--steps", "3", "--val-every", "3")))
    b = load_file(str(run(image_folder, tmp_path, "b", "--steps", "3", "--val-every", "3")))
    c = load_file(str(run(image_folder, tmp_path, "c", "--steps", "3", "--val-every", "3", "--seed", "1")))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_exactly(image_folder: Path, tmp_path: Path) -> None:
    straight = run(image_folder, tmp_path, "straight", "--steps", "6", "--val-every", "3")
    # Interrupted after step 3 (the first checkpoint), then resumed to 6 in the same run dir.
    run(image_folder, tmp_path, "resumed", "--steps", "3", "--val-every", "3", "--warmup", "200")
    ckpt = tmp_path / "run-resumed" / "last.safetensors"
    assert ckpt.is_file()
    resumed = run(image_folder, tmp_path, "resumed", "--steps", "6", "--val-every", "3", "--resume")
    a = read_card(straight)["training"]
    b = read_card(resumed)["training"]
    assert a["steps_run"] == b["steps_run"] == 6
    assert [h["from_step"] for h in a["history"]] == [0]
    assert [h["from_step"] for h in b["history"]] == [0, 3] and "--resume" in b["history"][1]["command"]
    last_a = load_file(str(tmp_path / "run-straight" / "last.safetensors"))
    last_b = load_file(str(ckpt))
    for k in last_a:
        assert torch.allclose(last_a[k].float(), last_b[k].float(), atol=1e-6), k


def test_init_from_copies_the_shared_body(image_folder: Path, tmp_path: Path) -> None:
    x2 = run(image_folder, tmp_path, "x2", "--steps", "2", "--val-every", "2")
    out = tmp_path / "x3"
    assert (
        srtrain.main(
            [
                "espcn",
                "--scale",
                "3",
                "--data",
                str(image_folder),
                "--out",
                str(out),
                "--run-dir",
                str(tmp_path / "run-x3"),
                "--eval-dir",
                str(tmp_path / "absent"),
                "--init-from",
                str(x2),
                "--steps",
                "1",
                "--val-every",
                "1",
                *TINY,
            ]
        )
        == 0
    )
    card = read_card(out / "espcn_x3.safetensors")
    # head conv + PReLU + mid conv + PReLU copied; the x3 tail has other shapes
    init = card["training"]["recipe"]["extra"]["init_from"]
    assert init["tensors"] == 6 and init["sha256"] == read_card(x2)["sha256"]


def test_split_is_fixed_and_disjoint(image_folder: Path) -> None:
    train, val = split(image_folder, 1)
    assert split(image_folder, 1) == (train, val)
    assert len(val) == 1 and not set(train) & set(val)
    with pytest.raises(ValueError):
        split(image_folder, 4)


def test_patches_are_aligned(image_folder: Path) -> None:
    pairs = load_pairs(sorted(image_folder.glob("*.png")), 2)
    sampler = PatchSampler(pairs, scale=2, patch=6, batch=4, generator=torch.Generator().manual_seed(0))
    lr, hr = sampler.sample()
    assert lr.shape == (4, 3, 6, 6) and hr.shape == (4, 3, 12, 12)
    # Box-averaging the HR patch lands near the LR patch (bicubic LR is close to it).
    assert (torch.nn.functional.avg_pool2d(hr, 2) - lr).abs().mean() < 0.05


def test_dihedral_group_has_eight_distinct_elements() -> None:
    t = torch.arange(9.0).view(1, 3, 3)
    assert len({tuple(dihedral(t, k).flatten().tolist()) for k in range(8)}) == 8


def test_data_downscale_shrinks_the_images_and_is_recorded(image_folder: Path, tmp_path: Path) -> None:
    files = sorted(image_folder.iterdir())
    whole, halved = load_pairs(files, 2), load_pairs(files, 2, shrink=2)
    for big, small in zip(whole.hr, halved.hr, strict=True):
        assert small.shape[-2:] == tuple(n // 2 // 2 * 2 for n in big.shape[-2:])  # halved, then modcropped
    expected = torch.from_numpy(np.asarray(load_rgb(files[0]), dtype=np.float64))
    h, w = halved.hr[0].shape[-2:]
    boxes = expected[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean(dim=(1, 3))  # each pixel a 2x2 mean
    assert (boxes.round() - halved.hr[0].permute(1, 2, 0).double()).abs().max() <= 1
    path = run(image_folder, tmp_path, "small", "--steps", "2", "--val-every", "2", "--data-downscale", "2")
    assert load_model(path)[1]["training"]["recipe"]["extra"]["data_downscale"] == 2
    assert srtrain.main(["espcn", "--scale", "2", "--data", str(image_folder), "--data-downscale", "0"]) == 2


def test_data_rescale_adds_resized_copies_and_records_them(image_folder: Path, tmp_path: Path) -> None:
    files = sorted(image_folder.iterdir())
    plain, more = load_pairs(files, 2), load_pairs(files, 2, rescales=(0.75, 0.5))
    assert len(more.hr) == 3 * len(plain.hr)
    assert more.names[:3] == [files[0].name, f"{files[0].name}@0.75", f"{files[0].name}@0.5"]
    image = load_rgb(files[0])  # 64x48 (w, h)
    half = np.asarray(image.resize((32, 24), Image.Resampling.BICUBIC))
    assert torch.equal(more.hr[2], torch.from_numpy(half.copy()).permute(2, 0, 1))  # resized, then paired
    assert more.lr[2].shape[-2:] == (12, 16)
    assert more.hr[1].shape[-2:] == (36, 48)
    assert all(torch.equal(a, b) for a, b in zip(plain.hr, more.hr[::3], strict=True))  # the originals unchanged

    path = run(image_folder, tmp_path, "rescaled", "--steps", "2", "--val-every", "2", "--data-rescale", "0.75")
    card = load_model(path)[1]
    assert card["training"]["recipe"]["extra"]["data_rescale"] == [0.75]
    for bad in (["1.5"], ["0"], ["1"]):
        assert srtrain.main(["espcn", "--scale", "2", "--data", str(image_folder), "--data-rescale", *bad]) == 2


def test_data_rescale_for_restoration(image_folder: Path, tmp_path: Path) -> None:
    files = sorted(image_folder.iterdir())
    images = load_images(files, rescales=(0.5,))
    assert [im.shape for im in images[:2]] == [(48, 64, 3), (24, 32, 3)]
    assert np.array_equal(images[1], np.asarray(load_rgb(files[0]).resize((32, 24), Image.Resampling.BICUBIC)))
    args = ["dejpeg", "--data", str(image_folder), "--eval-dir", str(tmp_path / "absent"), "--val-count", "1"]
    args += ["--arch", "features=4", "max_features=8", "--patch", "16", "--batch", "2", "--quiet", "--threads", "1"]
    args += ["--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run"), "--steps", "2", "--val-every", "2"]
    assert srtrain.main([*args, "--data-rescale", "0.5"]) == 0
    recipe = read_card(tmp_path / "out" / "dejpeg_x1.safetensors")["training"]["recipe"]
    assert recipe["extra"]["data_rescale"] == [0.5]


def test_bad_arch_argument_is_a_usage_error(image_folder: Path, tmp_path: Path) -> None:
    assert srtrain.main(["espcn", "--scale", "2", "--data", str(image_folder), "--arch", "colour=3"]) == 2


def test_loss_is_chosen_and_recorded(image_folder: Path, tmp_path: Path) -> None:
    l1 = run(image_folder, tmp_path, "l1", "--steps", "3", "--val-every", "3")
    l2 = run(image_folder, tmp_path, "l2", "--steps", "3", "--val-every", "3", "--loss", "l2")
    assert read_card(l1)["training"]["recipe"]["loss"] == "l1"
    assert read_card(l2)["training"]["recipe"]["loss"] == "l2"
    a, b = load_file(str(l1)), load_file(str(l2))
    assert not all(torch.equal(a[k], b[k]) for k in a)  # same seed and data: only the loss differs
    with pytest.raises(SystemExit) as exc:
        srtrain.main(["espcn", "--scale", "2", "--data", str(image_folder), "--loss", "huber"])
    assert exc.value.code == 2
