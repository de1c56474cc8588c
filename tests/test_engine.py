"""The worker in-process: failures stay in their batch, OOM splits, cancelled work is dropped."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest
import torch
from torch import nn

from srserve.service.cost_model import CostModel, Sample
from srserve.service.engine import Engine, Priority, QueueFull
from srserve.service.inference import predict
from srserve.service.jobs import DeadlineExceeded, DeviceOutOfMemory
from srserve.service.metrics import Metrics
from srserve.service.model_pool import ModelEntry, ModelPool
from srserve.service.request_context import REQUEST_ID
from srserve.service.routing import Route


class Doubler(nn.Module):
    """x2 nearest upscale that can be told to fail; records batch sizes."""

    scale = 2

    def __init__(self, fail_when: int | None = None, oom_above: int | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.fail_when, self.oom_above, self.delay = fail_when, oom_above, delay
        self.batches: list[int] = []
        self.order: list[int] = []  # the first pixel of each window computed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.oom_above is not None and n > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append(n)
        self.order.extend(int(v) for v in (x[:, 0, 0, 0] * 255).round())
        time.sleep(self.delay)
        if self.fail_when is not None and (x * 255).round().eq(self.fail_when).any():
            raise ValueError("poisoned input")
        return x.repeat_interleave(2, -2).repeat_interleave(2, -1)


def make_engine(model: Doubler, **kwargs: object) -> tuple[Engine, Route]:
    pool = ModelPool(device=torch.device("cpu"), weights_dir=None, enabled=[], window=16)  # type: ignore[arg-type]
    entry = ModelEntry("doubler", "learned", model, radius=0)
    route = Route(entry, ("learned", "doubler", 2), (0, 0), True, 2)
    options = {"max_batch_tiles": 8, "max_batch_delay_s": 0.05, "max_queue_tiles": 1000, **kwargs}
    return Engine(pool, Metrics(), **options), route  # type: ignore[arg-type]


def sample(engine: Engine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


def route_for(route: Route, pixels: np.ndarray) -> Route:
    h, w = pixels.shape[:2]
    return Route(route.entry, route.key, (2 * h, 2 * w), True, 2)


def image(value: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


async def submit_all(engine: Engine, route: Route, images: list[np.ndarray], timeout: float = 10.0) -> list:
    jobs = [engine.submit(route_for(route, im), im, time.monotonic() + timeout) for im in images]
    return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)


def test_tiles_of_many_requests_share_batches() -> None:
    model = Doubler()
    engine, route = make_engine(model)
    engine.start()
    results = asyncio.run(submit_all(engine, route, [image(i, 40, 20) for i in range(6)]))
    engine.stop(5)
    for i, out in enumerate(results):
        assert np.array_equal(out, image(i, 80, 40))
    assert max(model.batches) > 1


def test_exception_fails_only_its_batch_and_the_worker_lives(caplog: pytest.LogCaptureFixture) -> None:
    model = Doubler(fail_when=13)
    engine, route = make_engine(model, max_batch_delay_s=0.2)

    async def scenario() -> tuple[list, list]:
        REQUEST_ID.set("req-13")  # the requests' context: the worker's log line names them
        first = await submit_all(engine, route, [image(1), image(13), image(2)])  # one batch
        second = await submit_all(engine, route, [image(3), image(4)])
        return first, second

    engine.start()
    first, second = asyncio.run(scenario())
    engine.stop(5)
    assert all(isinstance(r, ValueError) for r in first)  # delivered to every request of the batch
    assert all(isinstance(r, np.ndarray) for r in second)
    assert engine.alive is False  # stopped cleanly above, not crashed
    assert sample(engine, "srserve_batch_failures_total", kind="error") == 1
    (failed,) = [r for r in caplog.records if r.name == "srserve.engine" and r.levelno == logging.ERROR]
    assert failed.request_id == "req-13,req-13,req-13"


def test_out_of_memory_splits_the_batch_before_failing() -> None:
    model = Doubler(oom_above=2)
    engine, route = make_engine(model, max_batch_delay_s=0.2)
    engine.start()
    results = asyncio.run(submit_all(engine, route, [image(i) for i in range(7)]))
    engine.stop(5)
    assert all(isinstance(r, np.ndarray) for r in results)
    assert max(model.batches) <= 2
    assert sample(engine, "srserve_batch_failures_total", kind="oom_split") >= 1


def test_a_single_tile_out_of_memory_is_reported() -> None:
    engine, route = make_engine(Doubler(oom_above=0))
    engine.start()
    (result,) = asyncio.run(submit_all(engine, route, [image(1)]))
    engine.stop(5)
    assert isinstance(result, DeviceOutOfMemory)


def test_cancelled_and_expired_work_is_dropped_before_compute() -> None:
    model = Doubler(delay=0.3)
    engine, route = make_engine(model, max_batch_tiles=1, max_batch_delay_s=0.0)

    async def scenario() -> list:
        blocker = engine.submit(route_for(route, image(1)), image(1), time.monotonic() + 10)
        gone = engine.submit(route_for(route, image(2, 64, 16)), image(2, 64, 16), time.monotonic() + 10)
        late = engine.submit(route_for(route, image(3)), image(3), time.monotonic() + 0.1)
        gone.cancel()
        return await asyncio.gather(blocker.future, late.future, return_exceptions=True)

    engine.start()
    done, late = asyncio.run(scenario())
    engine.stop(5)
    assert isinstance(done, np.ndarray) and isinstance(late, DeadlineExceeded)
    assert model.batches == [1]  # neither the 4 tiles of the cancelled job nor the late one ran
    assert sample(engine, "srserve_dropped_tiles_total", reason="cancelled") == 4


def test_queue_bound() -> None:
    engine, route = make_engine(Doubler(), max_queue_tiles=4)

    async def scenario() -> None:
        engine.submit(route_for(route, image(1, 64, 16)), image(1, 64, 16), time.monotonic() + 5)  # 4 tiles
        with pytest.raises(QueueFull) as refused:
            engine.submit(route_for(route, image(2)), image(2), time.monotonic() + 5)
        assert refused.value.reason == "queue_full"

    asyncio.run(scenario())  # worker not started: everything stays queued
    assert engine.queued_tiles == 4


def test_a_chained_job_is_admitted_for_its_largest_stage() -> None:
    """1 window of restoration, then 4 of upscaling: the queue bound counts the 4."""
    engine, up = make_engine(Doubler(), max_queue_tiles=4)
    restore_entry = ModelEntry("inverter", "learned", Inverter(), radius=0, min_window=64)
    pixels = image(1, 64, 16)
    first = Route(restore_entry, ("learned", "inverter", 1), (64, 16), True, 1)
    second = route_for(up, pixels)

    async def scenario() -> None:
        engine.submit(route_for(up, image(2)), image(2), time.monotonic() + 5)  # 1 window queued
        assert len(engine.plan_for(first, 64, 16).tiles) == 1 and len(engine.plan_for(second, 64, 16).tiles) == 4
        with pytest.raises(QueueFull) as refused:
            engine.submit(first, pixels, time.monotonic() + 5, then=[second])
        assert "needs 4 more" in str(refused.value)

    asyncio.run(scenario())  # worker not started: everything stays queued
    assert engine.queued_tiles == 1


def costed(model: Doubler, seconds_per_pixel: float, **kwargs: object) -> tuple[Engine, Route]:
    """An engine whose model is known to cost ``seconds_per_pixel`` (as if measured at warm-up)."""
    engine, route = make_engine(model, **kwargs)
    route.entry.cost = CostModel((Sample(16 * 16, 1, seconds_per_pixel * 256),), max_batch=8)
    return engine, route


def test_admission_refuses_by_predicted_wait_not_tile_count() -> None:
    engine, route = costed(Doubler(), 1e-3, max_queue_wait_s=1.1)  # a 16x16 image: 0.256 s

    async def scenario() -> QueueFull:
        for i in range(4):  # each waits behind the ones before: 0, 0.26, 0.51, 0.77 s
            engine.submit(route_for(route, image(i)), image(i), time.monotonic() + 5)
        assert engine.predicted_wait() == pytest.approx(4 * 0.256)
        with pytest.raises(QueueFull) as refused:  # a fifth would be done after 1.28 s
            engine.submit(route_for(route, image(9)), image(9), time.monotonic() + 5)
        return refused.value

    refused = asyncio.run(scenario())  # worker not started: everything stays queued
    assert (
        refused.reason == "queue_wait"
        and "1.0 s of work ahead, 0.3 s of its own" in str(refused)
        and "1.1 s" in str(refused)
    )
    assert refused.retry_after >= 1.0
    assert engine.queued_tiles == 4


def test_low_priority_is_shed_first_and_waits_behind_normal() -> None:
    model = Doubler()
    engine, route = costed(model, 1e-3, max_queue_wait_s=0.9)

    async def scenario() -> list:
        low = [
            engine.submit(route_for(route, image(i)), image(i), time.monotonic() + 10, priority=Priority.LOW)
            for i in range(3)
        ]
        with pytest.raises(QueueFull):  # 0.77 s of low work ahead and 0.26 s of its own
            engine.submit(route_for(route, image(7)), image(7), time.monotonic() + 10, priority=Priority.LOW)
        assert engine.predicted_wait(Priority.NORMAL) == 0.0  # low work does not count ahead of normal
        normal = engine.submit(route_for(route, image(50)), image(50), time.monotonic() + 10)
        engine.start()
        return await asyncio.gather(normal.future, *(j.future for j in low))

    results = asyncio.run(scenario())
    engine.stop(5)
    assert [int(r[0, 0, 0]) for r in results] == [50, 0, 1, 2]
    assert model.order[0] == 50  # the normal request was computed first


def test_predictions_follow_measured_batch_times() -> None:
    engine, route = costed(Doubler(delay=0.05), 1e-6)  # predicted 0.26 ms a window, takes 50 ms

    async def scenario() -> float:
        await submit_all(engine, route, [image(i) for i in range(4)])
        engine.stop(5)
        engine.submit(route_for(route, image(1)), image(1), time.monotonic() + 5)
        return engine.predicted_wait()

    engine.start()
    wait = asyncio.run(scenario())
    assert wait > 0.01  # corrected up from 0.26 ms towards the 50 ms a batch really took


def test_a_lone_request_does_not_wait_for_company() -> None:
    engine, route = make_engine(Doubler(), max_batch_delay_s=30.0)

    async def scenario() -> np.ndarray:
        with engine.arriving() as queued:
            job = engine.submit(route_for(route, image(3)), image(3), time.monotonic() + 60, arrived=queued)
        return await asyncio.wait_for(job.future, 10)  # not the 30 s batch delay

    engine.start()
    out = asyncio.run(scenario())
    engine.stop(5)
    assert np.array_equal(out, image(3, 32, 32))


def test_plans_are_counted_in_pixels() -> None:
    engine, route = make_engine(Doubler())  # windows of at most 16: a 40x20 image is cut

    async def scenario() -> None:
        job = engine.submit(route_for(route, image(1, 40, 20)), image(1, 40, 20), time.monotonic() + 5)
        assert job.plan.rows * job.plan.cols == len(job.plan.tiles) > 1

    asyncio.run(scenario())
    image_px = sample(engine, "srserve_image_pixels_total", model="doubler")
    computed = sample(engine, "srserve_computed_pixels_total", model="doubler")
    assert image_px == 800 and computed >= image_px


class LazyRunner:
    """Stands in for CUDA's asynchronous runner on a CPU: work starts at launch, pixels come at wait."""

    overlaps = True
    slots = 1

    def __init__(self, model: Doubler) -> None:
        self.model = model
        self.events: list[str] = []

    def launch(self, module: nn.Module, windows: np.ndarray, **_: object) -> object:
        n = sum(e.startswith("launch") for e in self.events)
        self.events.append(f"launch{n}")
        runner = self

        class Lazy:
            device_s = None  # not timed: the engine counts its turn
            width = 1  # one slot

            def done(self) -> bool:
                return False  # its work starts when awaited

            def wait(self) -> np.ndarray:
                runner.events.append(f"wait{n}")
                return predict(module, windows, device=torch.device("cpu"))

            def release(self) -> None:
                pass

        return Lazy()


def test_with_an_overlapping_runner_the_next_batch_launches_before_the_last_is_awaited() -> None:
    model = Doubler()
    engine, route = make_engine(model, max_batch_tiles=1, max_batch_delay_s=0.0)
    runner = LazyRunner(model)
    engine.runner = runner  # type: ignore[assignment]

    async def scenario() -> list:
        jobs = [engine.submit(route_for(route, image(i)), image(i), time.monotonic() + 5) for i in range(4)]
        engine.start()
        return await asyncio.gather(*(j.future for j in jobs))

    results = asyncio.run(scenario())
    engine.stop(5)
    assert [int(r[0, 0, 0]) for r in results] == [0, 1, 2, 3]
    assert all(np.array_equal(r, image(i, 32, 32)) for i, r in enumerate(results))
    launches = [e for e in runner.events if e.startswith("launch")]
    assert len(launches) == 4
    # Batch k+1 was on its way before batch k's pixels were awaited.
    assert runner.events.index("launch1") < runner.events.index("wait0")
    assert runner.events.index("launch3") < runner.events.index("wait2")


def test_a_failed_output_allocation_gives_its_capacity_back() -> None:
    engine, route = make_engine(Doubler(), max_queue_tiles=8)
    pixels = image(1, 16, 16)
    huge = Route(route.entry, route.key, (1 << 20, 1 << 20), True, 2)  # a 3 TiB output: no machine has it

    async def scenario() -> None:
        with pytest.raises(MemoryError):
            engine.submit(huge, pixels, time.monotonic() + 10)
        assert engine.queued_tiles == 0
        assert sample(engine, "srserve_queued_tiles") == 0
        assert engine.predicted_wait() == 0
        engine.submit(route_for(route, pixels), pixels, time.monotonic() + 10)  # the queue is not left full
        assert sample(engine, "srserve_queued_tiles") == engine.queued_tiles == 1

    asyncio.run(scenario())


class Inverter(nn.Module):
    """An x1 'restoration' that inverts the image, so its stage is visible in the result."""

    scale = 1

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return 1.0 - x


def test_a_chained_job_restores_then_upscales_and_both_stages_batch_across_requests() -> None:
    doubler, inverter = Doubler(), Inverter()
    engine, up = make_engine(doubler, max_batch_delay_s=0.2, max_queue_tiles=1000)
    restore_entry = ModelEntry("inverter", "learned", inverter, radius=0)

    def chain(pixels: np.ndarray) -> tuple[Route, Route]:
        h, w = pixels.shape[:2]
        return Route(restore_entry, ("learned", "inverter", 1), (h, w), True, 1), route_for(up, pixels)

    async def scenario() -> list:
        jobs = []
        for value in (10, 20, 30):
            pixels = image(value, 16, 16)
            first, second = chain(pixels)
            jobs.append(engine.submit(first, pixels, time.monotonic() + 10, then=[second]))
        results = await asyncio.gather(*(j.future for j in jobs))
        assert [len(j.plans) for j in jobs] == [2, 2, 2]
        return results

    engine.start()
    results = asyncio.run(scenario())
    engine.stop(5)
    for value, out in zip((10, 20, 30), results, strict=True):
        assert np.array_equal(out, image(255 - value, 32, 32))  # inverted, then doubled
    assert max(inverter.batches) > 1 and max(doubler.batches) > 1  # each stage batched across requests
    assert engine.queued_tiles == 0 and sample(engine, "srserve_queued_tiles") == 0
    assert sample(engine, "srserve_image_pixels_total", model="inverter") == 3 * 16 * 16
