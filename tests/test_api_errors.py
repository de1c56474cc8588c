"""Bad input through the app's ASGI interface: every 4xx is JSON that says what was wrong and what is allowed.

Nothing a client sends gets a 500; limits, API keys and the not-yet-ready answer are here too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests import imagegen
from tests.inprocess import LIMITS, app_client, assert_error, png, upload
from tests.server import metric_value

SETTINGS = {"max_batch_delay_ms": 20, **LIMITS}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with app_client(**SETTINGS) as c:
        yield c


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
