"""The API through the app's ASGI interface, in this process: endpoints, modes, limits and errors.

What needs a real process (load, drains, disconnects, logs) is in test_api_load and test_logs.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from srserve.models.weights import read_card
from srserve.service.model_pool import ModelPool
from srserve.service.routing import resolve
from tests import imagegen
from tests.conftest import WEIGHTS, smooth_image
from tests.inprocess import app_client
from tests.server import metric_value

TILE = 48
SETTINGS = {
    "tile_size": TILE,
    "max_batch_delay_ms": 20,
    "max_upload_bytes": 2_000_000,
    "max_input_pixels": 250_000,
    "max_output_pixels": 1_000_000,
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with app_client(**SETTINGS) as c:
        yield c


def png(image: Image.Image) -> bytes:
    return imagegen.encode(image, "PNG")


def upload(client: TestClient, data: bytes, **params: object) -> httpx.Response:
    return client.post("/v1/upscale", params=params, files={"image": ("in.png", data, "image/png")})


def opened(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


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


def test_exif_orientation_and_icc_profile(client: TestClient) -> None:
    rotated = imagegen.with_orientation(imagegen.rgb(20, 24), 6)
    assert opened(upload(client, rotated, scale=2)).size == (40, 48)
    icc = imagegen.srgb_profile()
    out = opened(upload(client, imagegen.encode(imagegen.rgb(), "PNG", icc_profile=icc), scale=2, format="jpeg"))
    assert out.info.get("icc_profile") == icc


# -- errors ----------------------------------------------------------------------------------------


def test_unknown_model_and_scale_list_the_valid_ones(client: TestClient) -> None:
    data = png(imagegen.rgb())
    error = assert_error(upload(client, data, model="esrgan", scale=2), 422, "unknown_model")
    assert "espcn" in error["allowed"] and "bicubic" in error["allowed"]
    error = assert_error(upload(client, data, model="espcn", scale=5), 422)
    assert error["allowed"] == [2, 3, 4] and error["field"] == "scale"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "gif"}, "format"),
        ({"quality": 0}, "quality"),
        ({"scale": "abc"}, "scale"),
        ({"scale": -1}, "scale"),
        ({"scales": 2}, "scales"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_parameters(client: TestClient, params: dict, field: str) -> None:
    error = assert_error(upload(client, png(imagegen.rgb()), **params), 422, "invalid_parameter")
    assert error["field"] == field
    assert "model" in error["parameters"]


def test_bad_combinations(client: TestClient) -> None:
    data = png(imagegen.rgb())
    assert_error(upload(client, data, model="nearest", align_corners="true", scale=2), 422)
    assert_error(upload(client, data, model="espcn", antialias="true", scale=2), 422)
    assert_error(upload(client, data, model="bicubic", scale=2, width=10), 422)
    error = assert_error(upload(client, data, model="espcn", width=31), 422)
    assert error["allowed"] == ["48x40", "72x60", "96x80"]


@pytest.mark.parametrize("data", [b"", b"hello", png(imagegen.rgb())[:100], imagegen.encode(imagegen.rgb(), "GIF")])
def test_unreadable_images(client: TestClient, data: bytes) -> None:
    error = assert_error(upload(client, data, scale=2), 422)
    assert error["field"] == "image"


def test_body_errors(client: TestClient) -> None:
    assert_error(client.post("/v1/upscale", content=b"{}", headers={"Content-Type": "application/json"}), 415)
    assert_error(client.post("/v1/upscale", files={"file": ("x.png", png(imagegen.rgb()))}), 422, "missing_image")
    before = metric_value(client.get("/metrics").text, "srserve_requests_total", {"status": "500"})
    malformed = client.post(
        "/v1/upscale", content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data"}
    )
    assert_error(malformed, 400)
    assert metric_value(client.get("/metrics").text, "srserve_requests_total", {"status": "500"}) == before


def test_limits(client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    too_big = imagegen.encode(Image.fromarray(noise), "BMP")  # 2.4 MB > 2 MB
    error = assert_error(upload(client, too_big, scale=2), 413, "upload_too_large")
    assert error["limits"] == {"max_upload_bytes": 2_000_000}
    error = assert_error(upload(client, png(imagegen.rgb(600, 500)), scale=2), 422, "input_pixels")
    assert "250000" in error["message"] and error["limits"] == {"max_input_pixels": 250000}
    error = assert_error(upload(client, png(imagegen.rgb(300, 300)), model="espcn", scale=4), 422, "output_pixels")
    assert error["limits"] == {"max_output_pixels": 1_000_000}
    bomb = png(Image.new("L", (20000, 20000)))
    assert_error(upload(client, bomb, scale=2), 422, "decompression_bomb")


def test_not_found_and_method_not_allowed_are_json(client: TestClient) -> None:
    assert "/v1/upscale" in assert_error(client.get("/v2/upscale"), 404, "not_found")["allowed"]
    assert assert_error(client.get("/v1/upscale"), 405, "method_not_allowed")["allowed"] == ["POST"]


def test_nothing_a_client_sends_gets_500(client: TestClient) -> None:
    rng = np.random.default_rng(1)
    bodies = [
        png(imagegen.rgb(1, 1)),
        png(imagegen.rgb(1, 300)),
        bytes(rng.integers(0, 256, 5000, dtype=np.uint8)),
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        imagegen.encode(imagegen.rgb(), "TIFF")[:200],
    ]
    params = [
        {},
        {"model": "deconv", "scale": 4},
        {"model": "area", "width": 1, "height": 1},
        {"model": "bicubic", "scale": 0.01},
        {"model": "nearest-exact", "height": 3},
        {"model": ""},
    ]
    for body in bodies:
        for p in params:
            r = upload(client, body, **p)
            assert r.status_code < 500, (p, r.text)


def test_rejections_are_counted(client: TestClient) -> None:
    upload(client, png(imagegen.rgb()), model="nope")
    text = client.get("/metrics").text
    assert metric_value(text, "srserve_rejections_total", {"reason": "unknown_model"}) >= 1
    upscale = {"route": "/v1/upscale"}
    assert metric_value(text, "srserve_requests_total", {**upscale, "status": "422", "status_class": "4xx"}) >= 1
    assert (
        metric_value(text, "srserve_request_duration_seconds_count", {**upscale, "model": "espcn", "status": "200"})
        >= 1
    )


def test_api_keys() -> None:
    with app_client(**SETTINGS, api_keys="k1, k2") as c:
        data = png(imagegen.rgb())
        assert_error(
            c.post("/v1/upscale", params={"scale": 2}, files={"image": ("a.png", data)}), 401, "missing_api_key"
        )
        assert_error(
            c.post("/v1/upscale", params={"scale": 2}, files={"image": ("a.png", data)}, headers={"X-API-Key": "nope"}),
            401,
            "invalid_api_key",
        )
        assert_error(c.get("/v1/models"), 401)
        ok = c.post("/v1/upscale", params={"scale": 2}, files={"image": ("a.png", data)}, headers={"X-API-Key": "k2"})
        assert ok.status_code == 200
        bearer = c.get("/v1/models", headers={"Authorization": "Bearer k1"})
        assert bearer.status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200


def test_models_answer_consistently_before_the_models_are_loaded() -> None:
    """While starting, /v1/models says so and lists learned models without scales: no half-filled list."""
    from srserve.service.app import create_app
    from srserve.service.settings import Settings

    app = create_app(Settings(device="cpu", warmup=False))
    client = TestClient(app)  # no lifespan: nothing loads
    body = client.get("/v1/models").json()
    assert body["status"] == "starting"
    espcn = next(m for m in body["models"] if m["name"] == "espcn")
    assert espcn["scales"] == [] and espcn["variants"] == [] and espcn["any_scale"] is False
    error = assert_error(upload(client, png(imagegen.rgb()), model="espcn", scale=2), 503, "not_ready")
    assert "starting" in error["message"]
