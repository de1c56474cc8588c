"""The API through the app's ASGI interface, in this process: endpoints, upscaling and image modes.

Errors and limits are in test_api_errors; what needs a real process (load, drains,
disconnects, logs) in test_api_load and test_logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from srserve.models.weights import read_card
from srserve.service.imageio import register_plugins
from srserve.service.model_pool import ModelPool
from srserve.service.routing import resolve
from tests import imagegen
from tests.conftest import WEIGHTS, smooth_image
from tests.inprocess import LIMITS, app_client, assert_error, opened, png, upload
from tests.server import metric_value

TILE = 48
SETTINGS = {"tile_size": TILE, "max_batch_delay_ms": 20, **LIMITS}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with app_client(**SETTINGS) as c:
        yield c


# -- endpoints -----------------------------------------------------------------------------------


def test_health_ready_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["device"] == "cpu"
    text = client.get("/metrics").text
    for name in (
        "srserve_request_duration_seconds",
        "srserve_queue_wait_seconds",
        "srserve_batch_compute_seconds",
        "srserve_decode_seconds",
        "srserve_encode_seconds",
        "srserve_batch_tiles",
        "srserve_queued_tiles",
        "srserve_inflight_requests",
        "srserve_requests_total",
        "srserve_rejections_total",
        "srserve_device_memory_bytes",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert metric_value(text, "srserve_ready") == 1


def test_models_lists_scales_parameters_fields_and_psnr(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    resizers = {"nearest", "nearest-exact", "bilinear", "bicubic", "area"}
    assert set(by_name) == {*resizers, "espcn", "deconv", "dejpeg", "denoise"}
    assert {n for n, m in by_name.items() if m["any_scale"]} == resizers
    for name in ("espcn", "deconv"):
        m = by_name[name]
        assert m["scales"] == [2, 3, 4]
        for v in m["variants"]:
            assert v["parameters"] > 1000 and v["receptive_radius"] > 0
            tiling = v["tiling"]
            assert tiling["max_window"] == TILE and tiling["halo"] == v["receptive_radius"]
            assert tiling["cost_measured"] is True  # measured at warm-up
            sizes = [p["size"] for p in tiling["plans"]]
            assert sizes[:2] == ["64x64", "256x256"] and "1920x1080" in sizes
            for plan in tiling["plans"]:
                assert re.fullmatch(r"\d+x\d+ of \d+x\d+", plan["windows"]) and plan["computed"] >= 1.0
            card = read_card(WEIGHTS / f"{name}_x{v['scale']}.safetensors")
            assert v["psnr"]["set5"] == card["metrics"]["set5"]["psnr_y"] and v["sha256"] == card["sha256"]
    assert by_name["bicubic"]["options"] == ["align_corners", "antialias"]
    assert body["limits"] == {
        "max_upload_bytes": 2_000_000,
        "max_input_pixels": 250_000,
        "max_output_pixels": 1_000_000,
        "request_timeout_s": 120.0,
        "max_queue_wait_s": 3.0,
        "formats": ["png", "jpeg", "webp"],
    }


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/upscale", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    op = spec["paths"]["/v1/upscale"]["post"]
    assert set(op["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
    names = {p["name"] for p in op["parameters"]}
    assert {"model", "scale", "width", "height", "format", "quality", "align_corners", "antialias"} <= names
    assert {"413", "415", "422", "503", "504"} <= set(op["responses"])


def test_web_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text
    assert "static/app.js" in page.text and "static/page.css" in page.text
    app_js = client.get("/static/app.js").text
    assert 'from "./compare.js"' in app_js and "v1/upscale" in app_js
    for path, media_type in (("app.js", "javascript"), ("compare.js", "javascript"), ("page.css", "text/css")):
        served = client.get(f"/static/{path}")
        assert served.status_code == 200 and media_type in served.headers["content-type"], path
    assert client.get("/static/../settings.py").status_code == 404  # only the page's folder


# -- upscaling -----------------------------------------------------------------------------------


def test_multipart_upscale_with_timing_and_request_id(client: TestClient) -> None:
    r = client.post(
        "/v1/upscale",
        params={"model": "espcn", "scale": 3},
        headers={"X-Request-ID": "abc-123"},
        files={"image": ("in.png", png(imagegen.rgb(30, 50)), "image/png")},
    )
    assert opened(r).size == (150, 90)
    assert r.headers["x-request-id"] == "abc-123"
    phases = [p.split(";")[0].strip() for p in r.headers["server-timing"].split(",")]
    assert phases == ["decode", "queue", "compute", "encode"]


def test_tile_plan_header_says_how_the_image_was_cut(client: TestClient) -> None:
    small = upload(client, png(imagegen.rgb(30, 40)), model="espcn", scale=2)
    assert small.headers["x-tile-plan"] == "1x1 windows of 40x30; computed 1.000x"
    big = upload(client, png(imagegen.rgb(100, 170)), model="espcn", scale=2)  # windows of at most 48 px
    m = re.fullmatch(r"(\d+)x(\d+) windows of (\d+)x(\d+); computed ([\d.]+)x", big.headers["x-tile-plan"])
    assert m, big.headers["x-tile-plan"]
    rows, cols, w, h, computed = int(m[1]), int(m[2]), int(m[3]), int(m[4]), float(m[5])
    assert rows > 1 and cols > 1 and max(w, h) <= TILE
    assert computed == pytest.approx(rows * cols * w * h / (100 * 170), abs=1e-3)
    assert opened(big).size == (340, 200)


def test_priority_low_is_served_and_a_bad_one_is_refused(client: TestClient) -> None:
    r = upload(client, png(imagegen.rgb(20, 20)), model="espcn", scale=2, priority="low")
    assert opened(r).size == (40, 40)
    error = assert_error(upload(client, png(imagegen.rgb(20, 20)), priority="urgent"), 422, "invalid_parameter")
    assert error["field"] == "priority" and "normal" in error["allowed"] and "low" in error["allowed"]


def test_raw_body_and_default_scale(client: TestClient) -> None:
    r = client.post("/v1/upscale", content=png(imagegen.rgb(20, 24)), headers={"Content-Type": "image/png"})
    assert opened(r).size == (48, 40)
    assert len(r.headers["x-request-id"]) == 32


def test_form_fields_are_parameters_too(client: TestClient) -> None:
    r = client.post(
        "/v1/upscale",
        data={"model": "nearest", "scale": "4"},
        files={"image": ("in.png", png(imagegen.rgb(10, 10)), "image/png")},
    )
    out = np.asarray(opened(r))
    src = np.asarray(imagegen.rgb(10, 10))
    assert np.array_equal(out, src.repeat(4, 0).repeat(4, 1))


def test_service_output_equals_local_whole_image_inference(client: TestClient) -> None:
    """Tiles batched on the server give the same pixels as one whole-image forward pass."""
    pool = ModelPool(device=__import__("torch").device("cpu"), weights_dir=WEIGHTS, enabled=["deconv"], window=4096)
    pool.load()
    src = smooth_image(70, 101, seed=9)
    for scale in (2, 4):
        r = upload(client, png(Image.fromarray(src)), model="deconv", scale=scale)
        got = np.asarray(opened(r))
        from srserve.service.windows import run_route

        ref = run_route(pool, resolve(pool, "deconv", in_size=(70, 101), scale=scale), src)  # one tile: the whole
        differ = got != ref
        assert differ.mean() < 1e-3 and np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_formats(client: TestClient, fmt: str) -> None:
    r = upload(client, png(imagegen.rgb()), model="bicubic", scale=2, format=fmt, quality=80)
    assert r.headers["content-type"] == f"image/{fmt}"
    assert opened(r).format == fmt.upper()


def test_resizers_by_size_factor_and_grid(client: TestClient) -> None:
    src = png(imagegen.rgb(20, 24))
    assert opened(upload(client, src, model="bicubic", scale=1.5)).size == (36, 30)
    assert opened(upload(client, src, model="bilinear", width=50)).size == (50, 42)
    assert opened(upload(client, src, model="area", scale=0.5)).size == (12, 10)
    a = np.asarray(opened(upload(client, src, model="bilinear", scale=2, align_corners="true")))
    b = np.asarray(opened(upload(client, src, model="bilinear", scale=2, align_corners="false")))
    assert a.shape == b.shape and not np.array_equal(a, b)


# -- modes ---------------------------------------------------------------------------------------


def test_rgba_keeps_alpha_in_png_and_webp(client: TestClient) -> None:
    data = png(imagegen.rgba())
    for fmt in ("png", "webp"):
        assert opened(upload(client, data, model="espcn", scale=2, format=fmt)).mode == "RGBA"
    error = assert_error(upload(client, data, model="espcn", scale=2, format="jpeg"), 422, "alpha_needs_png_or_webp")
    assert error["allowed"] == ["png", "webp"]


def test_grey_modes(client: TestClient) -> None:
    assert opened(upload(client, png(imagegen.rgb().convert("L")), scale=2)).mode == "L"
    assert opened(upload(client, png(imagegen.rgba().convert("LA")), scale=2)).mode == "LA"
    out = opened(upload(client, png(imagegen.grey16()), model="espcn", scale=2))
    assert out.mode.startswith("I") and np.asarray(out).max() > 255  # still 16-bit
    p = imagegen.rgb().convert("P")
    assert opened(upload(client, imagegen.encode(p, "PNG", transparency=0), scale=2)).mode == "RGBA"
    assert opened(upload(client, png(p), scale=2)).mode == "RGB"


def test_cmyk_bmp_tiff_webp_inputs(client: TestClient) -> None:
    cmyk = imagegen.encode(imagegen.rgb().convert("CMYK"), "JPEG")
    assert opened(upload(client, cmyk, scale=2)).mode == "RGB"
    for fmt in ("BMP", "TIFF", "WEBP"):
        assert opened(upload(client, imagegen.encode(imagegen.rgb(), fmt), scale=2)).size == (48, 40)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_uploads(client: TestClient, fmt: str) -> None:
    register_plugins()  # for pillow-heif's writer, here
    data = imagegen.encode(imagegen.rgb(), fmt, quality=90)
    assert opened(upload(client, data, scale=2)).size == (48, 40)
    assert_error(upload(client, data[: len(data) // 2], scale=2), 422, "bad_image")


def test_a_fast_decode_that_fails_is_redone_by_pillow_and_counted(client: TestClient) -> None:
    before = metric_value(client.get("/metrics").text, "srserve_codec_fallbacks_total", {"op": "png_decode"})
    broken = png(imagegen.rgb(40, 40))[:-60]  # a whole header, broken pixels: Pillow gives the answer
    error = assert_error(upload(client, broken, scale=2), 422, "bad_image")
    assert "truncated" in error["message"]
    after = metric_value(client.get("/metrics").text, "srserve_codec_fallbacks_total", {"op": "png_decode"})
    assert after == before + 1


def test_exif_orientation_and_icc_profile(client: TestClient) -> None:
    rotated = imagegen.with_orientation(imagegen.rgb(20, 24), 6)
    assert opened(upload(client, rotated, scale=2)).size == (40, 48)
    icc = imagegen.srgb_profile()
    out = opened(upload(client, imagegen.encode(imagegen.rgb(), "PNG", icc_profile=icc), scale=2, format="jpeg"))
    assert out.info.get("icc_profile") == icc
