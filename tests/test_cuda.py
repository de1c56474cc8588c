"""The core of the service on a GPU (skipped without CUDA)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from srserve.service.inference import predict
from srserve.service.model_pool import ModelPool
from srserve.service.routing import resolve
from srserve.service.windows import run_route
from tests import imagegen
from tests.conftest import WEIGHTS, smooth_image
from tests.server import metric_value, running_server

pytestmark = pytest.mark.cuda


def close(a: np.ndarray, b: np.ndarray, max_diff: int = 1, fraction: float = 1e-2) -> bool:
    diff = np.abs(a.astype(int) - b.astype(int))
    return diff.max() <= max_diff and (diff > 0).mean() < fraction


@pytest.mark.parametrize("name", ["espcn", "deconv"])
def test_gpu_tiles_match_cpu_whole_image(name: str) -> None:
    image = smooth_image(123, 77, seed=3)
    cpu = ModelPool(device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=[name], window=4096)
    gpu = ModelPool(device=torch.device("cuda"), weights_dir=WEIGHTS, enabled=[name], window=64)
    cpu.load()
    gpu.load()
    for scale in gpu.scales(name):
        ref = run_route(cpu, resolve(cpu, name, in_size=(123, 77), scale=scale), image)
        got = run_route(gpu, resolve(gpu, name, in_size=(123, 77), scale=scale), image, batch_tiles=16)
        assert close(got, ref)


def test_half_precision_is_close_to_float() -> None:
    pool = ModelPool(device=torch.device("cuda"), weights_dir=WEIGHTS, enabled=["espcn"], window=64)
    pool.load()
    entry = pool.learned[("espcn", 2)]
    windows = np.stack([smooth_image(64, 64, seed=i) for i in range(8)])
    full = predict(entry.module, windows, device=pool.device)
    for precision in ("fp16", "bf16"):
        half = predict(entry.module, windows, device=pool.device, precision=precision)
        assert np.abs(half.astype(int) - full).max() <= 3


def test_warm_up_measures_a_precision_for_models_not_named(tmp_path: Path) -> None:
    env = {"SR_DEVICE": "cuda", "SR_MODELS": "espcn,deconv", "SR_PRECISION": '{"deconv": "fp32"}'}
    with running_server(tmp_path, env) as s:
        models = {m["name"]: m for m in httpx.get(f"{s.url}/v1/models").json()["models"]}
        for variant in models["espcn"]["variants"]:
            scores = variant["precision_psnr_db"]
            assert scores, variant  # measured
            chosen = variant["precision"]
            assert chosen == "fp32" or (scores[chosen] or 0) >= 50.0
        assert all(v["precision"] == "fp32" and not v["precision_psnr_db"] for v in models["deconv"]["variants"])


def test_server_on_gpu_batches_concurrent_requests(tmp_path: Path) -> None:
    env = {
        "SR_DEVICE": "cuda",
        "SR_TILE_SIZE": "64",
        "SR_MAX_BATCH_DELAY_MS": "20",
        "SR_PRECISION": '{"deconv": "fp16"}',
    }
    with running_server(tmp_path, env) as s:
        ready = httpx.get(f"{s.url}/readyz").json()
        assert ready["device"].startswith("cuda")
        data = [imagegen.encode(imagegen.rgb(40 + 7 * i, 90 - 5 * i, seed=i)) for i in range(16)]

        def post(d: bytes) -> np.ndarray:
            r = httpx.post(
                f"{s.url}/v1/upscale", params={"model": "espcn", "scale": 2}, files={"image": ("x.png", d)}, timeout=60
            )
            assert r.status_code == 200, r.text
            return np.asarray(Image.open(io.BytesIO(r.content)))

        singles = [post(d) for d in data]
        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(post, data))
        for a, b in zip(singles, together, strict=True):
            assert close(a, b)
        text = s.metrics()
        assert metric_value(text, "srserve_batch_tiles_sum") > metric_value(text, "srserve_batch_tiles_count")
        assert metric_value(text, "srserve_device_memory_bytes", {"kind": "allocated"}) > 0
        fp16 = httpx.post(
            f"{s.url}/v1/upscale",
            params={"model": "deconv", "scale": 4},
            files={"image": ("x.png", data[0])},
            timeout=60,
        )
        assert fp16.status_code == 200


def test_gpu_jpeg_decodes_and_encodes_close_to_libjpeg_turbo() -> None:
    from srserve.service.fast_codecs import Codecs
    from srserve.service.gpu_jpeg import GpuJpeg
    from srserve.service.imageio import decode, encode

    gpu = Codecs(gpu_jpeg=GpuJpeg(torch.device("cuda")))
    icc = imagegen.srgb_profile()
    for turn in (1, 6):
        data = imagegen.with_orientation(imagegen.rgb(61, 90), turn)
        got, ref = decode(data, max_pixels=10**8, codecs=gpu), decode(data, max_pixels=10**8, codecs=Codecs())
        assert got.pixels.shape == ref.pixels.shape  # turned upright the same way
        assert np.abs(got.pixels.astype(int) - ref.pixels).mean() < 1.0  # nvJPEG's IDCT is not libjpeg's
    grey = imagegen.encode(imagegen.rgb(40, 50).convert("L"), "JPEG")
    assert decode(grey, max_pixels=10**8, codecs=gpu).grey
    pixels = smooth_image(64, 96)
    out = encode(pixels, None, grey=False, fmt="jpeg", quality=90, icc_profile=icc, codecs=gpu)
    with Image.open(io.BytesIO(out)) as im:
        assert im.info.get("icc_profile") == icc and im.size == (96, 64)
        assert np.abs(np.asarray(im).astype(int) - pixels).mean() < 4


def test_gpu_jpeg_batches_the_calls_of_many_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from srserve.service import fast_codecs
    from srserve.service.gpu_jpeg import GpuJpeg

    jpeg = GpuJpeg(torch.device("cuda"), max_delay_s=0.02)
    files = [fast_codecs.jpeg_encode(smooth_image(48 + i, 64, seed=i), quality=90, icc_profile=None) for i in range(8)]
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda f: jpeg.decode(f, grey=False), files))
        for f, out in zip(files, got, strict=True):
            ref = fast_codecs.jpeg_decode(f)
            assert out.shape == ref.shape and np.abs(out.astype(int) - ref).mean() < 1.0
        assert max(jpeg.batch_sizes) > 1
    finally:
        jpeg.close()


def test_server_with_gpu_jpeg_answers_jpeg(tmp_path: Path) -> None:
    with running_server(tmp_path, {"SR_DEVICE": "cuda", "SR_GPU_JPEG": "1", "SR_MODELS": "espcn"}) as s:
        data = imagegen.encode(imagegen.rgb(48, 64), "JPEG")
        r = httpx.post(
            f"{s.url}/v1/upscale",
            params={"model": "espcn", "scale": 2, "format": "jpeg"},
            files={"image": ("x.jpg", data)},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).size == (128, 96)
        assert metric_value(s.metrics(), "srserve_codec_fallbacks_total") == 0


def test_warm_up_on_the_gpu_chooses_buckets_and_padded_batches_stay_exact(tmp_path: Path) -> None:
    """The real device's cost model says batch (buckets listed), and uploads of many sizes, padded to shared
    shapes and batched together, answer what the CPU computes for each whole image."""
    env = {"SR_DEVICE": "cuda", "SR_MODELS": "espcn", "SR_AUTO_PRECISION": "false", "SR_MAX_BATCH_DELAY_MS": "20"}
    cpu = ModelPool(device=torch.device("cpu"), weights_dir=WEIGHTS, enabled=["espcn"], window=4096)
    cpu.load()
    with running_server(tmp_path, env) as s:
        models = {m["name"]: m for m in httpx.get(f"{s.url}/v1/models").json()["models"]}
        assert all(v["tiling"]["buckets"] for v in models["espcn"]["variants"]), models["espcn"]
        images = [np.asarray(imagegen.rgb(37 + 11 * i, 61 + 7 * i, seed=i)) for i in range(12)]

        def post(image: np.ndarray) -> tuple[np.ndarray, str]:
            r = httpx.post(
                f"{s.url}/v1/upscale",
                params={"model": "espcn", "scale": 2},
                files={"image": ("x.png", imagegen.encode(Image.fromarray(image)))},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            return np.asarray(Image.open(io.BytesIO(r.content))), r.headers["x-tile-plan"]

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(post, images))
        batches = metric_value(s.metrics(), "srserve_batch_tiles_count")
        assert batches < len(images)  # shared batches
    assert any("bucket" in plan for _, plan in answers)
    for image, (got, _) in zip(images, answers, strict=True):
        ref = run_route(cpu, resolve(cpu, "espcn", in_size=image.shape[:2], scale=2), image)
        assert close(got, ref)


def test_community_models_on_the_gpu_half_precision_only_where_the_architecture_supports_it(tmp_path: Path) -> None:
    """Compact says supports_half, HAT does not (fp16 gives transformers black or NaN output): warm-up tries
    fp16 for the first only; both answer at their scale.
    Needs spandrel and a torchvision built for this torch (device_check.sh carries them)."""
    pytest.importorskip("spandrel", reason="spandrel (and a matching torchvision) not installed on this machine")
    from tests.community_models import write_models

    write_models(tmp_path / "models", ["compact", "hat"])
    env = {"SR_DEVICE": "cuda", "SR_MODELS": "nearest", "SR_MODELS_DIR": str(tmp_path / "models")}
    with running_server(tmp_path, env) as s:
        models = {m["name"]: m for m in httpx.get(f"{s.url}/v1/models").json()["models"]}
        compact, hat = models["compact"]["variants"][0], models["hat"]["variants"][0]
        assert "fp16" in compact["precision_psnr_db"]
        assert "fp16" not in hat["precision_psnr_db"] and hat["precision"] in ("fp32", "bf16")
        assert 4096 <= hat["tiling"]["whole_max_pixels"] <= 4_194_304  # measured against the device's memory
        image = smooth_image(90, 130, seed=2)
        r = httpx.post(
            f"{s.url}/v1/upscale",
            params={"model": "compact"},
            files={"image": ("a.png", imagegen.encode(Image.fromarray(image), "PNG"))},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).shape == (360, 520, 3)
