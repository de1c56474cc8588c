"""The real server under concurrent load: cross-request batching, back-pressure,
deadlines, clients that leave, and a graceful SIGTERM drain.

Tests about time (waits, deadlines, drains) use the slow test model, whose
batches take as long as the test says on any machine.
"""

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
from tests.slow_model import slow_weights_dir

pytestmark = pytest.mark.slow

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
    # No warm-up timing: on a busy CPU it can measure batch 1 as the cheapest and cap every batch at one tile.
    env["SR_WARMUP"] = "false"
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


def slow_server(tmp_path: Path, delay_s: float, **env: str):
    """A server whose ``slow`` model sleeps ``delay_s`` a batch: timing set by the test, not the CPU.

    One batch at a time (``SR_CPU_LANES=1``): two lanes would sleep side by side, which no core limits.
    """
    weights = slow_weights_dir(tmp_path / "weights", delay_s)
    full = {"SR_WEIGHTS_DIR": str(weights), "SR_MODELS": "slow,bicubic", "SR_MAX_BATCH_TILES": "1"}
    full |= {"SR_CPU_LANES": "1", **env}
    return running_server(tmp_path, full, module="tests.slow_serve")


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    env = {"SR_TILE_SIZE": "32", "SR_MAX_QUEUE_TILES": "6", "SR_RETRY_AFTER_S": "3"}
    env["SR_MAX_QUEUE_WAIT_S"] = "600"  # the window bound alone, not the predicted wait
    with slow_server(tmp_path, 0.2, **env) as s:
        data = imagegen.encode(imagegen.rgb(60, 60))  # 4 windows of 30: 0.8 s of work
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: post(s.url, data, model="slow", scale=2), range(8)))
        codes = [r.status_code for r in results]
        assert set(codes) == {200, 503}, codes
        busy = next(r for r in results if r.status_code == 503)
        assert busy.json()["error"]["code"] == "queue_full"
        # At least SR_RETRY_AFTER_S; more when the queue ahead is predicted to take longer (8 x 0.8 s at most).
        assert 3 <= int(busy.headers["retry-after"]) <= 7
        assert metric_value(s.metrics(), "srserve_rejections_total", {"reason": "queue_full"}) == codes.count(503)


def test_overload_is_shed_by_predicted_wait_batch_jobs_first(tmp_path: Path) -> None:
    """A flood of low-priority work is refused quickly once its predicted wait passes the limit,
    while interactive (normal) uploads arriving meanwhile are admitted ahead of it."""
    with slow_server(tmp_path, 0.25, SR_MAX_QUEUE_WAIT_S="1.0") as s:
        data = imagegen.encode(imagegen.rgb(40, 40))  # one window: one 0.25 s batch
        flood: list[httpx.Response] = []
        stop_at = time.monotonic() + 4.0

        def batch_job() -> None:
            while time.monotonic() < stop_at:  # bounded in time; each refusal is retried at once
                flood.append(post(s.url, data, model="slow", scale=2, priority="low"))

        with ThreadPoolExecutor(12) as pool:
            for _ in range(12):
                pool.submit(batch_job)
            time.sleep(1.5)  # the low queue is full by now
            interactive = [post(s.url, data, model="slow", scale=2) for _ in range(3)]
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
    with slow_server(tmp_path, 0.3, SR_REQUEST_TIMEOUT_S="1.0") as s:
        data = imagegen.encode(imagegen.rgb(20, 20))  # one window: one 0.3 s batch, one at a time
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: post(s.url, data, model="slow", scale=2), range(6)))  # 1.8 s of work
        codes = [r.status_code for r in results]
        assert set(codes) == {200, 504}, codes
        late = next(r for r in results if r.status_code == 504)
        assert late.json()["error"]["code"] == "deadline_exceeded"
        small = post(s.url, imagegen.encode(imagegen.rgb(8, 8)), model="bicubic", scale=2)
        assert small.status_code == 200


def test_work_of_a_client_that_left_is_dropped(tmp_path: Path) -> None:
    with slow_server(tmp_path, 0.2, SR_TILE_SIZE="32") as s:
        data = imagegen.encode(imagegen.rgb(100, 100))  # 16 windows of 25 px: 3.2 s of work
        with pytest.raises(httpx.ReadTimeout):
            post(s.url, data, timeout=1.0, model="slow", scale=2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = s.metrics()
            if metric_value(text, "srserve_queued_tiles") == 0 and metric_value(text, "srserve_inflight_requests") == 0:
                break
            time.sleep(0.2)
        dropped = metric_value(text, "srserve_dropped_tiles_total", {"reason": "cancelled"})
        computed = metric_value(text, "srserve_batch_tiles_sum")
        assert dropped > 0 and dropped + computed >= 16
        assert metric_value(text, "srserve_rejections_total", {"reason": "client_gone"}) == 1


def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    with slow_server(tmp_path, 1.0, SR_DRAIN_SECONDS="1.5") as s:
        result: list[httpx.Response] = []
        data = imagegen.encode(imagegen.rgb(30, 30))
        worker = threading.Thread(target=lambda: result.append(post(s.url, data, model="slow", scale=2)))
        worker.start()
        time.sleep(0.4)  # the request is running: its one batch takes 1 s
        s.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(f"{s.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        late = post(s.url, imagegen.encode(imagegen.rgb(20, 20)), model="bicubic", scale=2)
        assert late.status_code == 200  # still served while the load balancer catches up
        worker.join(60)
        assert result and result[0].status_code == 200  # finished, not cut off
        assert s.process.wait(30) in (0, -signal.SIGTERM)


def test_refusals_cost_no_decode_and_early_resends_are_held(tmp_path: Path) -> None:
    """Refused on the queue ahead (the gate, before the upload is read) or on its own size (the header,
    before the decode): either way nothing is decoded. A resend before Retry-After is held, not refused again."""
    with slow_server(tmp_path, 0.5, SR_MAX_QUEUE_WAIT_S="2.0", SR_TILE_SIZE="32") as s:
        text = s.metrics()
        for model in ("slow", "bicubic"):  # ready means warm: each model's path ran through the engine
            assert metric_value(text, "srserve_batch_tiles_count", {"model": model}) > 0
        small = imagegen.encode(imagegen.rgb(24, 24))  # one window: one 0.5 s batch
        large = imagegen.encode(imagegen.rgb(128, 128))  # 16 windows: 8 s of its own
        decodes = metric_value(text, "srserve_decode_seconds_count")
        with ThreadPoolExecutor(8) as pool:
            fills = [pool.submit(post, s.url, small, model="slow", scale=2) for _ in range(3)]  # 1.5 s ahead
            time.sleep(0.3)
            on_size = post(s.url, large, model="slow", scale=2)  # 1.5 s ahead + its own: over 2 s
            flood = [pool.submit(post, s.url, small + bytes(i), model="slow", priority="low") for i in range(1, 4)]
            ahead = [f.result() for f in flood]
            codes = [f.result().status_code for f in fills]
        assert on_size.status_code == 503, on_size.text
        error = on_size.json()["error"]
        assert error["code"] == "queue_wait" and "answered in" in error["message"]
        assert error["limits"]["max_queue_wait_s"] == 2.0 and error["limits"]["predicted_answer_s"] > 2.0
        answered = codes.count(200) + [r.status_code for r in ahead].count(200)
        assert metric_value(s.metrics(), "srserve_decode_seconds_count") - decodes == answered

        t0 = time.monotonic()
        again = post(s.url, large, model="slow", scale=2)  # at once, ignoring Retry-After: held first
        assert time.monotonic() - t0 >= float(on_size.headers["retry-after"]) * 0.5
        assert again.status_code in (200, 503)
