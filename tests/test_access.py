"""Every response is counted, logged once and carries its request ID: 2xx to 5xx, before and after routing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests import imagegen
from tests.inprocess import app_client, sample

SMALL = {"tile_size": 48, "max_upload_bytes": 100_000, "warmup": False}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with app_client(**SMALL) as c:
        yield c


def count(client: TestClient, route: str, status: int, **labels: str) -> float:
    return sample(
        client,
        "srserve_requests_total",
        {
            "route": route,
            "status": str(status),
            "status_class": f"{status // 100}xx",
            "model": "",
            "priority": "",
            **labels,
        },
    )


def upload(client: TestClient, data: bytes, **params: object):
    return client.post("/v1/upscale", params=params, files={"image": ("a.png", data, "image/png")})


def test_responses_refused_before_the_handler_are_counted(client: TestClient) -> None:
    up = {"model": "espcn", "priority": "normal"}
    before = {
        "422": count(client, "/v1/upscale", 422, **up),
        "413": count(client, "/v1/upscale", 413, priority="normal"),
        "404": count(client, "unmatched", 404),
        "405": count(client, "/v1/upscale", 405, priority="normal"),
    }
    assert client.post("/v1/upscale", params={"model": "espcn", "quality": "abc"}).status_code == 422
    big = client.post(
        "/v1/upscale", content=b"x" * 10, headers={"Content-Length": "200000", "Content-Type": "image/png"}
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "upload_too_large"
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/v1/upscale").status_code == 405
    assert count(client, "/v1/upscale", 422, **up) == before["422"] + 1
    assert count(client, "/v1/upscale", 413, priority="normal") == before["413"] + 1
    assert count(client, "unmatched", 404) == before["404"] + 1
    assert count(client, "/v1/upscale", 405, priority="normal") == before["405"] + 1
    assert sample(client, "srserve_rejections_total", {"reason": "upload_too_large"}) >= 1
    assert sample(client, "srserve_rejections_total", {"reason": "invalid_parameter"}) >= 1


def test_labels_stay_bounded(client: TestClient) -> None:
    data = imagegen.encode(imagegen.rgb(16, 16))
    for name in ("made-up-1", "made-up-2", "x" * 300):
        assert upload(client, data, model=name, scale=2).status_code == 422
    assert upload(client, data, model="espcn", scale=2, priority="urgent").status_code == 422
    assert upload(client, data, model="espcn", scale=2, priority="low").status_code == 200
    families = {m.name: m for m in client.app.state.runtime.metrics.registry.collect()}
    values = {s.labels["model"] for s in families["srserve_requests"].samples}
    assert values <= {"", "unknown", *client.app.state.runtime.pool.names}
    assert "unknown" in values
    assert {s.labels["priority"] for s in families["srserve_requests"].samples} <= {"", "normal", "low", "invalid"}
    assert count(client, "/v1/upscale", 200, model="espcn", priority="low") >= 1


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/v1/nothing", headers={"X-Request-ID": "bad id with spaces"})
    assert made.status_code == 404 and len(made.headers["x-request-id"]) == 32


def test_an_unhandled_error_is_one_json_500_with_the_id_and_one_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = client.app

    async def boom() -> None:
        raise RuntimeError("kaput")

    app.add_api_route("/test-boom", boom)  # type: ignore[attr-defined]
    before = count(client, "/test-boom", 500)
    with caplog.at_level(logging.INFO):
        r = client.get("/test-boom", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-500"
    assert r.json()["error"]["code"] == "internal_error" and r.json()["error"]["request_id"] == "req-500"
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1 and "kaput" in str(tracebacks[0].exc_info[1])
    assert count(client, "/test-boom", 500) == before + 1
    assert sample(client, "srserve_rejections_total", {"reason": "internal_error"}) >= 1


def test_one_access_line_with_sizes_timing_and_error_code(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    data = imagegen.encode(imagegen.rgb(20, 30))
    with caplog.at_level(logging.DEBUG, logger="srserve.access"):
        ok = upload(client, data, model="espcn", scale=3)
        bad = upload(client, data, model="espcn", scale=5)
        client.get("/healthz")
    lines = [r for r in caplog.records if r.name == "srserve.access"]
    assert len(lines) == 3
    first, second, probe = lines
    assert first.levelno == logging.INFO and first.request_id == ok.headers["x-request-id"]
    assert (first.status, first.in_size, first.out_size, first.scale) == (200, "30x20", "90x60", 3.0)
    assert first.server_timing == ok.headers["server-timing"] and "compute;dur=" in first.server_timing
    assert "status=200" in first.getMessage() and "out_size=90x60" in first.getMessage()
    assert (second.status, second.error) == (422, bad.json()["error"]["code"])
    assert probe.levelno == logging.DEBUG and probe.path == "/healthz"
