"""The real server under concurrent load: cross-request batching, back-pressure,
deadlines, clients that leave, and a graceful SIGTERM drain."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import imagegen
from tests.server import metric_value, running_server

SIZES = [(17, 23), (48, 48), (60, 91), (33, 120), (5, 7), (100, 64), (47, 49), (1, 1)]


def post(url: str, data: bytes, timeout: float = 120, **params: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/upscale", params=params, files={"image": ("x.png", data, "image/png")}, timeout=timeout
    )


def pixels(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    import io

    return np.asarray(Image.open(io.BytesIO(r.content)))


def test_concurrent_mixed_uploads_batch_across_requests_and_match_single(tmp_path: Path) -> None:
    env = {"SR_TILE_SIZE": "48", "SR_MAX_BATCH_DELAY_MS": "30", "SR_MAX_BATCH_TILES": "16", "SR_MAX_QUEUE_WAIT_S": "60"}
    with running_server(tmp_path, env) as s:
        uploads = [
            (imagegen.encode(imagegen.rgb(*SIZES[i % len(SIZES)], seed=i)), ("espcn", "deconv")[i % 2], 2 + i % 3)
            for i in range(32)
        ]
        singles = [pixels(post(s.url, d, model=m, scale=k)) for d, m, k in uploads]
        before = metric_value(s.metrics(), "srserve_batch_tiles_count")
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda u: post(s.url, u[0], model=u[1], scale=u[2]), uploads))
        for single, r in zip(singles, results, strict=True):
            got = pixels(r)
            assert got.shape == single.shape
            # Same tiles, other batch companions: equal but for rare float ties.
            assert (got != single).mean() < 1e-3 and np.abs(got.astype(int) - single).max() <= 1
        text = s.metrics()
        batches = metric_value(text, "srserve_batch_tiles_count") - before
        one_tile = sum(
            metric_value(text, "srserve_batch_tiles_bucket", {"model": m, "le": "1.0"}) for m in ("espcn", "deconv")
        )
        multi = metric_value(text, "srserve_batch_tiles_count") - one_tile
        assert batches > 0 and multi > 0, "no batch of more than one tile formed"
        assert metric_value(text, "srserve_queued_tiles") == 0
        assert metric_value(text, "srserve_inflight_requests") == 0


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    env = {"SR_TILE_SIZE": "32", "SR_MAX_QUEUE_TILES": "6", "SR_MAX_BATCH_TILES": "2", "SR_RETRY_AFTER_S": "3"}
    env["SR_MAX_QUEUE_WAIT_S"] = "600"  # the window bound alone, not the predicted wait
    with running_server(tmp_path, env) as s:
        data = imagegen.encode(imagegen.rgb(60, 60))  # 4 tiles of 32
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: post(s.url, data, model="deconv", scale=4), range(16)))
        codes = [r.status_code for r in results]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
        busy = next(r for r in results if r.status_code == 503)
        assert busy.headers["retry-after"] == "3" and busy.json()["error"]["code"] == "queue_full"
        assert metric_value(s.metrics(), "srserve_rejections_total", {"reason": "queue_full"}) == codes.count(503)


def test_overload_is_shed_by_predicted_wait_batch_jobs_first(tmp_path: Path) -> None:
    """A flood of low-priority work is refused quickly once its predicted wait passes the limit,
    while interactive (normal) uploads arriving meanwhile are admitted ahead of it."""
    env = {"SR_TILE_SIZE": "128", "SR_MAX_QUEUE_WAIT_S": "1.0", "SR_MAX_BATCH_TILES": "2"}
    with running_server(tmp_path, env) as s:
        big = imagegen.encode(imagegen.rgb(240, 240))
        small = imagegen.encode(imagegen.rgb(40, 40))
        flood: list[httpx.Response] = []
        stop_at = time.monotonic() + 4.0

        def batch_job() -> None:
            while time.monotonic() < stop_at:  # bounded in time; each refusal is retried at once
                flood.append(post(s.url, big, model="deconv", scale=2, priority="low"))

        with ThreadPoolExecutor(12) as pool:
            for _ in range(12):
                pool.submit(batch_job)
            time.sleep(2.0)  # the low queue is full by now
            interactive = [post(s.url, small, model="espcn", scale=2) for _ in range(3)]
        codes = [r.status_code for r in flood]
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
        refused = next(r for r in flood if r.status_code == 503)
        error = refused.json()["error"]
        assert error["code"] == "queue_wait" and "SR_MAX_QUEUE_WAIT_S" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert [r.status_code for r in interactive] == [200, 200, 200]
        text = s.metrics()
        assert metric_value(text, "srserve_rejections_total", {"reason": "queue_wait"}) == codes.count(503)
        assert metric_value(text, "srserve_computed_pixels_total") >= metric_value(text, "srserve_image_pixels_total")


def test_request_past_its_deadline_gets_504_and_the_server_goes_on(tmp_path: Path) -> None:
    env = {"SR_TILE_SIZE": "64", "SR_REQUEST_TIMEOUT_S": "0.4", "SR_MAX_BATCH_TILES": "1"}
    with running_server(tmp_path, env) as s:
        data = imagegen.encode(imagegen.rgb(250, 250))
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: post(s.url, data, model="deconv", scale=4), range(6)))
        late = [r for r in results if r.status_code == 504]
        assert late and late[0].json()["error"]["code"] == "deadline_exceeded"
        assert all(r.status_code in (200, 504) for r in results)
        small = post(s.url, imagegen.encode(imagegen.rgb(8, 8)), model="bicubic", scale=2)
        assert small.status_code == 200


def test_work_of_a_client_that_left_is_dropped(tmp_path: Path) -> None:
    env = {"SR_TILE_SIZE": "32", "SR_MAX_BATCH_TILES": "1"}
    with running_server(tmp_path, env) as s:
        data = imagegen.encode(imagegen.rgb(400, 400))  # ~300 tiles at x4: seconds of work
        with pytest.raises(httpx.ReadTimeout):
            post(s.url, data, timeout=1.0, model="deconv", scale=4)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = s.metrics()
            if metric_value(text, "srserve_queued_tiles") == 0 and metric_value(text, "srserve_inflight_requests") == 0:
                break
            time.sleep(0.2)
        dropped = metric_value(text, "srserve_dropped_tiles_total", {"reason": "cancelled"})
        computed = metric_value(text, "srserve_batch_tiles_sum")
        assert dropped > 0 and dropped + computed >= 100
        assert metric_value(text, "srserve_rejections_total", {"reason": "client_gone"}) == 1


def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    env = {"SR_TILE_SIZE": "32", "SR_MAX_BATCH_TILES": "1", "SR_DRAIN_SECONDS": "1.5"}
    with running_server(tmp_path, env) as s:
        data = imagegen.encode(imagegen.rgb(150, 150))
        result: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: result.append(post(s.url, data, model="deconv", scale=4)))
        worker.start()
        time.sleep(0.5)  # the request is queued / running
        s.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(f"{s.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        late = post(s.url, imagegen.encode(imagegen.rgb(20, 20)), model="bicubic", scale=2)
        assert late.status_code == 200  # still served while the load balancer catches up
        worker.join(60)
        assert result and result[0].status_code == 200  # finished, not cut off
        assert s.process.wait(30) in (0, -signal.SIGTERM)
