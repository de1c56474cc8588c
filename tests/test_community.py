"""Community model files (SR_MODELS_DIR): tiny random-weight models of spandrel's own architectures,
detected from their tensors, measured for tiling, served and listed like the built-in models."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from srserve.models.community import CommunityModelError, SpandrelNet, choose_tiling, load_model_file
from srserve.models.community.convert import convert
from srserve.models.community.licences import CODE_LICENCES
from srserve.models.community.reach import METHOD, with_margin
from srserve.models.imageops import upscale_array
from srserve.service import blend
from srserve.service.model_pool import ModelPool
from tests.community_models import EXPECTED, write_models, write_sidecar
from tests.conftest import WEIGHTS, smooth_image
from tests.inprocess import app_client, assert_error, pixels_of, png_of, upload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("community")
    write_models(folder)
    write_sidecar(folder / "compact.safetensors", display_name="Tiny Compact", licence="CC0-1.0", description="test")
    return folder


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    # Windows forced small (tile_size 48: each model's own smallest useful window, 4x its halo, wins where larger);
    # unwarmed, so the flat cost prior plans and admission does not shed the concurrent requests below.
    # Whole images up to 12,000 LR px (the 70x150 below runs whole, 120x160 blended).
    with app_client(
        models_dir=folder,
        models=["espcn", "nearest"],
        tile_size=48,
        warmup=False,
        max_queue_wait_s=600,
        whole_max_pixels=12_000,
    ) as c:
        yield c


def whole_image(folder: Path, name: str, pixels: np.ndarray) -> np.ndarray:
    """The reference: the detected network on the whole image, in this process, outside the service."""
    model = load_model_file(folder / f"{name}.safetensors")
    with torch.inference_mode():
        return upscale_array(model.net, pixels)


def test_every_architecture_is_detected_and_listed(client: TestClient, folder: Path) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert len(EXPECTED) >= 8
    for name, (arch, scale, purpose, mode) in EXPECTED.items():
        m = models[name]
        assert m["kind"] == "learned" and m["scales"] == [scale]
        assert m["task"] == ("upscale" if purpose == "SR" else "restore")
        info = m["community"]
        assert (info["architecture"], info["purpose"]) == (arch, purpose)
        assert info["code_licence"] == CODE_LICENCES[arch]
        variant = m["variants"][0]
        net = load_model_file(folder / f"{name}.safetensors").net
        assert variant["parameters"] == sum(p.numel() for p in net.parameters()) > 0
        assert len(variant["sha256"]) == 64
        assert variant["tiling"]["mode"] == mode, name
        assert variant["precision"] == "fp32"  # on a CPU
    compact = models["compact"]["community"]
    assert (compact["display_name"], compact["licence"]) == ("Tiny Compact", "CC0-1.0")
    assert models["esrgan"]["community"]["licence"] == "unknown"  # no sidecar: the weights' licence is not known
    assert models["swinir"]["variants"][0]["tiling"]["grid"] == 8  # its attention window, measured
    assert models["espcn"]["community"] is None


#: Networks whose CPU float output depends on the batch and window shape (oneDNN picks kernels by shape):
#: a window's 8-bit pixels can then differ from the whole image's by one level, rarely (measured: NAFNet,
#: 1 pixel of 23,100 here once its windows ran one per lane; ESRGAN's floats differ too, its pixels did not).
ROUNDS_BY_SHAPE = {"nafnet", "esrgan"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_served_at_its_scale_and_equal_to_the_whole_image(client: TestClient, folder: Path, name: str) -> None:
    """Every file answers at its own scale (the default), with the same 8-bit pixels as the network on the whole
    image (within one level, rarely, where its kernels round by shape): finite-reach networks through windows
    forced small (exact halos), the others whole."""
    _, scale, _, mode = EXPECTED[name]
    h, w = (70, 330) if mode == "exact" else (70, 150)  # wider than 4 halos; under the whole-image budget
    image = smooth_image(h, w, seed=3)
    r = upload(client, png_of(image), model=name)
    got = pixels_of(r)
    assert got.shape == (h * scale, w * scale, 3)
    whole = whole_image(folder, name, image)
    if mode == "exact":
        assert not r.headers["x-tile-plan"].startswith("1x1"), r.headers["x-tile-plan"]
    if name in ROUNDS_BY_SHAPE:
        differ = np.abs(got.astype(int) - whole).max(axis=2)
        assert differ.max() <= 1 and (differ > 0).mean() <= 1e-4
    else:
        assert int((got != whole).any(axis=2).sum()) == 0


def test_images_of_any_shape_are_answered_by_every_architecture(client: TestClient) -> None:
    """Under an architecture's minimum, off its multiple, one pixel wide: padded as it needs, cropped back."""
    for name, (_, scale, _, _) in EXPECTED.items():
        for h, w in [(1, 1), (2, 3), (5, 200), (200, 5), (17, 33)]:
            image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
            assert pixels_of(upload(client, png_of(image), model=name)).shape == (h * scale, w * scale, 3), name


def test_reach_is_measured_from_the_network(client: TestClient) -> None:
    """Finite reaches as the architectures' layers give them; attention and pooling on their own grids."""
    pool = client.app.state.runtime.pool
    tiling = {name: pool.learned[(name, EXPECTED[name][1])].module for name in EXPECTED}
    assert tiling["compact"].receptive_radius == with_margin(6)  # six 3x3 convolutions, and the margin
    assert with_margin(30) <= tiling["esrgan"].receptive_radius <= with_margin(40)  # 2 RRDBs of 15 convs, and more
    assert (tiling["swinir"].grid, tiling["nafnet"].grid) == (8, 4)  # its attention window; its 2 downsamplings
    assert all(tiling[n].receptive_radius == 0 for n in ("hat", "dat", "omnisr"))  # global: whole images


def test_a_network_with_a_global_reach_is_never_tiled() -> None:
    """A stand-in whose every output pixel reads the image's mean: no halo suffices, so it runs whole."""

    class Global(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=2) + x.mean(dim=(2, 3), keepdim=True)

    net = SpandrelNet.__new__(SpandrelNet)
    torch.nn.Module.__init__(net)
    net.net, net._call, net.scale = Global(), lambda m, x: m(x), 2
    net.minimum, net.multiple_of, net.square, net._one_at_a_time = 0, 1, False, None
    assert choose_tiling(net).mode == "whole"


@pytest.mark.parametrize("name", ["hat", "dat"])
def test_a_global_network_over_its_budget_is_blended_within_its_reported_error(
    client: TestClient, folder: Path, name: str
) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    tiling = models[name]["variants"][0]["tiling"]
    assert tiling["mode"] == "whole" and tiling["whole_max_pixels"] == 12_000
    reported = tiling["blend_psnr_db"]
    image = blend.probe_image(120, 160, seed=4)
    r = upload(client, png_of(image), model=name)
    assert r.headers["x-tile-plan"].split()[0] != "1x1"  # 19,200 px: over the budget, so windows
    got = pixels_of(r)
    assert got.shape == (240, 320, 3)
    # Its windows (109 px, the budget's side) are larger than the load-time probe's 96: no worse than reported.
    assert blend.psnr_db(got, whole_image(folder, name, image)) >= reported - 0.5


def test_concurrent_requests_of_different_architectures(client: TestClient, folder: Path) -> None:
    names = ["compact", "esrgan", "hat", "swinir", "span", "compact", "esrgan", "span"]
    images = [smooth_image(40 + 8 * i, 64, seed=i) for i in range(len(names))]
    with ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(lambda k: upload(client, png_of(images[k]), model=names[k]), range(len(names))))
    for name, image, r in zip(names, images, responses, strict=True):
        assert np.array_equal(pixels_of(r), whole_image(folder, name, image)), name


def test_a_community_restorer_chains_before_an_upscaler(client: TestClient, folder: Path) -> None:
    image = smooth_image(40, 56, seed=9)
    r = upload(client, png_of(image), model="espcn", scale=2, restore="nafnet")
    from srserve.models.catalog import get_upsampler

    espcn, _ = get_upsampler("espcn", 2, weights_dir=WEIGHTS)
    with torch.inference_mode():
        want = upscale_array(espcn, whole_image(folder, "nafnet", image))
    assert np.array_equal(pixels_of(r), want)


def test_a_wrong_scale_is_refused_with_the_allowed_one(client: TestClient) -> None:
    error = assert_error(upload(client, png_of(smooth_image(32, 32)), model="compact", scale=2), 422)
    assert error["allowed"] == [4]


def test_a_file_that_is_no_known_architecture_stops_start_up(tmp_path: Path) -> None:
    write_models(tmp_path, ["compact"])
    from safetensors.torch import save_file

    save_file({"whatever.weight": torch.zeros(3, 3)}, tmp_path / "mystery.safetensors")
    with pytest.raises(CommunityModelError, match=r"mystery\.safetensors: no architecture spandrel knows"):
        ModelPool(device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=[], models_dir=tmp_path)
    pool = ModelPool(
        device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=[], models_dir=tmp_path, skip_bad_models=True
    )
    assert pool.names == ["compact"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "model.pth").write_bytes(b"x"), r"model\.pth: srserve loads \.safetensors files only"),
        (lambda d: write_models(d, ["compact"]) and (d / "compact.safetensors").rename(d / "espcn.safetensors"),
         "built-in model's name"),
        (lambda d: write_models(d, ["span"]) and write_sidecar(d / "span.safetensors", scale=4),
         "the sidecar says scale 4, the network upscales by 2"),
        (lambda d: write_models(d, ["span"]) and write_sidecar(d / "span.safetensors", sha256="0" * 64),
         "not the 0+ its card says"),
        (lambda d: (d / "broken.safetensors").write_bytes(b"\x00" * 16), "not a readable safetensors file"),
    ],
)  # fmt: skip
def test_files_that_cannot_be_served_say_why(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(CommunityModelError, match=message):
        ModelPool(device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=[], models_dir=tmp_path)


def test_srserve_serve_stops_with_the_file_and_why(tmp_path: Path) -> None:
    """The real command: a bad file ends start-up (exit 2) with one line naming it, before the port opens."""
    (tmp_path / "notes.pth").write_bytes(b"not a model")
    proc = subprocess.run(
        [sys.executable, "-m", "srserve.service", "serve", "--models", str(tmp_path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SR_DEVICE": "cpu"},
    )
    assert proc.returncode == 2
    assert "srserve: notes.pth: srserve loads .safetensors files only" in proc.stderr
    assert "srserve convert notes.pth notes.safetensors" in proc.stderr


class RunsCode:
    """A pickle that calls a function when loaded (what a malicious .pth does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_convert_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"body.0.weight": RunsCode(marker)}, f)
    with pytest.raises(CommunityModelError, match=r"evil\.pth: not loadable"):
        convert(evil, tmp_path / "evil.safetensors")
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()
    with pytest.raises(CommunityModelError, match=r"srserve loads \.safetensors files only"):
        load_model_file(evil)


def test_convert_writes_safetensors_and_a_card_that_serve(tmp_path: Path, folder: Path) -> None:
    net = load_model_file(folder / "span.safetensors").net
    torch.save(net.net.state_dict(), tmp_path / "4x_thing.pth")
    card = convert(tmp_path / "4x_thing.pth", tmp_path / "thing.safetensors", licence="MIT")
    assert (card["architecture"], card["scale"], card["licence"]) == ("SPAN", 2, "MIT")
    assert card["parameters"] == sum(p.numel() for p in net.parameters())
    assert len(card["source_sha256"]) == 64 and card["source_file"] == "4x_thing.pth"
    assert card["tiling"] == choose_tiling(load_model_file(folder / "span.safetensors").net).card()  # measured here
    loaded = load_model_file(tmp_path / "thing.safetensors")  # the card's sha256 is checked against the file
    assert loaded.card["licence"] == "MIT"
    image = smooth_image(24, 30)
    with torch.inference_mode():
        assert np.array_equal(upscale_array(loaded.net, image), upscale_array(net, image))


@pytest.mark.parametrize(
    ("card", "radius"),
    [
        ({"tiling": {"mode": "exact", "radius": 9, "grid": 1, "method": METHOD}}, 9),  # tied to the file: used
        ({"tiling": {"mode": "exact", "radius": 9, "grid": 1, "method": METHOD + 1}}, 7),  # older method: measured
        ({"tiling": {"mode": "exact", "radius": 9, "grid": 1, "method": METHOD}, "sha256": None}, 7),  # not tied
    ],
)
def test_a_cards_tiling_is_used_only_when_tied_to_the_file_and_this_method(
    tmp_path: Path, card: dict, radius: int
) -> None:
    from srserve.models.weights import sha256_file

    (path,) = write_models(tmp_path, ["compact"])
    if "sha256" not in card:
        card["sha256"] = sha256_file(path)
    write_sidecar(path, **{k: v for k, v in card.items() if v is not None})
    pool = ModelPool(device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=[], models_dir=tmp_path)
    pool.load()
    assert pool.learned[("compact", 4)].radius == radius  # compact's measured reach is 6: a halo of 7


def test_the_licence_table_covers_every_architecture_spandrel_detects() -> None:
    import spandrel

    ids = {a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures()}
    assert ids == set(CODE_LICENCES)
    assert "unknown" not in CODE_LICENCES.values()


def test_an_empty_models_dir_setting_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose passes ``SR_MODELS_DIR=`` for an unset variable: no folder, not the working directory."""
    from srserve.service.settings import Settings

    monkeypatch.setenv("SR_MODELS_DIR", "")
    assert Settings().models_dir is None
    monkeypatch.setenv("SR_MODELS_DIR", "/srv/models")
    assert Settings().models_dir == Path("/srv/models")
