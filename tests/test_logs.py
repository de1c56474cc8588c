"""The real server's log: SR_LOG_FORMAT=json lines, one access line a request, probes quiet at info."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests import imagegen
from tests.server import running_server

pytestmark = pytest.mark.slow  # real server processes


def test_json_log_has_one_access_line_per_request_with_its_id(tmp_path: Path) -> None:
    env = {"SR_LOG_LEVEL": "info", "SR_LOG_FORMAT": "json", "SR_TILE_SIZE": "64", "SR_WARMUP": "false"}
    with running_server(tmp_path, env) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        for _ in range(3):
            assert c.get("/healthz").status_code == 200
        files = {"image": ("a.png", imagegen.encode(imagegen.rgb(30, 20)), "image/png")}
        ok = c.post("/v1/upscale", params={"model": "deconv", "scale": 2}, files=files, headers={"X-Request-ID": "r-1"})
        bad = c.post("/v1/upscale", params={"model": "deconv", "scale": 7}, files=files)
        assert ok.status_code == 200 and bad.status_code == 422
        text = s.output()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "request_id", "message"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "srserve.access"]
    assert [a["path"] for a in access] == ["/v1/upscale", "/v1/upscale"]  # probes are not logged at info
    first, second = access
    assert first["request_id"] == "r-1" and first["status"] == 200 and first["model"] == "deconv"
    assert (first["in_size"], first["out_size"], first["scale"]) == ("20x30", "40x60", 2.0)
    assert "compute;dur=" in first["server_timing"]
    assert second["request_id"] == bad.headers["x-request-id"]
    assert second["status"] == 422 and second["error"] == bad.json()["error"]["code"]
    assert not any('HTTP/1.1"' in line["message"] for line in lines)  # no uvicorn access line besides ours
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own lines go through it too
