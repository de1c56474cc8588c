"""dejpeg and denoise through the API: x1 by default, chained before an upscaler in one job, and the
same bits as sreval's direct model output."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from srserve.models.catalog import get_upsampler
from srserve.models.imageops import upscale_array
from srserve.models.training.degrade import TASKS
from srserve.service.model_pool import ModelPool
from srserve.service.routing import resolve
from srserve.service.windows import run_route
from tests.conftest import WEIGHTS, smooth_image
from tests.inprocess import app_client, pixels_of, png_of, sample, upload


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Unwarmed (no measured cost), the predicted waits are a flat prior: admission would shed
    # the concurrent requests below, which is not what these tests are about.
    with app_client(tile_size=128, warmup=False, max_queue_wait_s=600) as c:
        yield c


def degraded(task: str, h: int = 60, w: int = 84) -> np.ndarray:
    clean = smooth_image(h, w, seed=5)
    return TASKS[task].apply(clean, TASKS[task].eval_level, np.random.default_rng(0))


@pytest.mark.parametrize("task", ["dejpeg", "denoise"])
def test_x1_by_default_and_bit_identical_to_the_model_alone(client: TestClient, task: str) -> None:
    """The API answers exactly what sreval measures: the model on the whole image (upscale_array)."""
    lq = degraded(task)
    r = upload(client, png_of(lq), model=task)
    model, _ = get_upsampler(task, 1, weights_dir=WEIGHTS)
    assert np.array_equal(pixels_of(r), upscale_array(model, lq))
    assert r.headers["x-output-size"] == "84x60"


@pytest.mark.parametrize("task", ["dejpeg", "denoise"])
def test_bit_identical_when_cut_into_windows_and_batched_with_other_requests(client: TestClient, task: str) -> None:
    """Several windows per image (SR_TILE_SIZE 128, the model's minimum 152), six requests at once so
    their windows share batches: each answer is still the whole image through the model, bit for bit."""
    images = [degraded(task, 300 + 8 * i, 260 - 6 * i) for i in range(6)]
    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(lambda lq: upload(client, png_of(lq), model=task), images))
    model, _ = get_upsampler(task, 1, weights_dir=WEIGHTS)
    for lq, r in zip(images, answers, strict=True):
        out = pixels_of(r)
        assert not r.headers["x-tile-plan"].startswith("1x1 "), r.headers["x-tile-plan"]  # really cut
        assert np.array_equal(out, upscale_array(model, lq))
    assert sample(client, "srserve_batch_tiles_sum", {"model": task}) > sample(
        client, "srserve_batch_tiles_count", {"model": task}
    )  # some batches held more than one window


@pytest.mark.parametrize("task", ["dejpeg", "denoise"])
def test_other_scales_are_refused_with_the_allowed_one(client: TestClient, task: str) -> None:
    r = upload(client, png_of(degraded(task)), model=task, scale=2)
    assert r.status_code == 422
    assert r.json()["error"]["allowed"] == [1] and r.json()["error"]["field"] == "scale"


def test_models_lists_them_with_their_task(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    for task in ("dejpeg", "denoise"):
        assert models[task]["task"] == task and models[task]["scales"] == [1]
        assert models[task]["variants"][0]["psnr"]  # the card's measured numbers
    assert models["espcn"]["task"] == "upscale"


def test_restore_then_upscale_in_one_request(client: TestClient) -> None:
    lq = degraded("denoise", 70, 90)
    before = sample(client, "srserve_image_pixels_total", {"model": "denoise"})
    r = upload(client, png_of(lq), model="espcn", scale=2, restore="denoise")
    out = pixels_of(r)
    assert out.shape == (140, 180, 3)
    assert r.headers["x-tile-plan"].startswith("denoise: ") and "; then espcn: " in r.headers["x-tile-plan"]
    assert sample(client, "srserve_image_pixels_total", {"model": "denoise"}) == before + 70 * 90
    # The same two models run one after the other in this process, with the same windows.
    pool = ModelPool(
        device=__import__("torch").device("cpu"), weights_dir=WEIGHTS, enabled=["denoise", "espcn"], window=128
    )
    pool.load()
    restored = run_route(pool, resolve(pool, "denoise", in_size=(70, 90), scale=1), lq)
    expected = run_route(pool, resolve(pool, "espcn", in_size=(70, 90), scale=2), restored)
    assert np.array_equal(out, expected)


def test_restore_must_be_a_restoration_model(client: TestClient) -> None:
    r = upload(client, png_of(degraded("dejpeg")), model="espcn", scale=2, restore="bicubic")
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "restore" and error["allowed"] == ["dejpeg", "denoise"]


@pytest.mark.parametrize("task", ["dejpeg", "denoise"])
def test_the_service_windows_of_the_trained_models_match_whole_image(task: str) -> None:
    """Windows on the pooling grid (small SR_TILE_SIZE: the model's own minimum applies) after uint8 rounding."""
    import torch

    from srserve.service.inference import predict

    pool = ModelPool(device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=[task], window=32)
    pool.load()
    entry = pool.learned[(task, 1)]
    module = entry.module
    assert entry.grid == math.lcm(2**module.depth, module.block or 1)  # the pooling grid, and JPEG's if told it
    assert entry.max_window(32) == entry.min_window >= 4 * entry.radius
    for size in [(1, 1), (9, 300), (300, 170), (161, 159)]:
        lq = degraded(task, *size)
        route = resolve(pool, task, in_size=size, scale=1)
        stitched = run_route(pool, route, lq, batch_tiles=3)
        whole = predict(entry.module, lq[None], device=pool.device)[0]
        differ = stitched != whole
        assert differ.mean() < 1e-3 and np.abs(stitched.astype(int) - whole).max() <= 1, size
